"""Hardware profiles by model size: interpolation in log params, clamping, notes for models too
small for the device, the profile fitted on recorded trials, the ``hardware:`` section's size
table, and the built-in tables against the files they cite (docs/anchors, docs/benchmarks).

The last test is the held-out check of the ``cpu`` profile: its hours within 2x of the
reproduction's measured ``train_s`` (docs/reproduction/results.csv) at each of its 5 sizes.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from optimix.core import hardware as hw
from optimix.core.config import SpaceError
from optimix.core.space import load_space

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"

# MFU 0.01 at 1e4 params, 0.1 at 1e6: linear in log10 params, 0.055 at 1e5.
TABLE = ((1e4, 0.01), (1e6, 0.1))


def profile(**kwargs) -> hw.Hardware:
    values = {"name": "dev", "peak_flops_per_s": 1e12, "mfu": 0.5, "usd_per_hour": 2.0,
              "mfu_by_params": TABLE, "table_source": "made up", **kwargs}
    return hw.Hardware(**values)


# ---------------------------------------------------------------------------------------------
# Interpolation and clamping


@pytest.mark.parametrize("params, mfu", [
    (1e4, 0.01),             # on a point
    (1e6, 0.1),
    (1e5, 0.055),            # halfway in log params, not in params
    (10 ** 4.5, 0.0325),
    (1.0, 0.01),             # clamped below the first point
    (1e3, 0.01),
    (1e9, 0.1),              # clamped above the last
    (np.int64(100_000), 0.055),
])
def test_mfu_is_linear_in_log_params_and_clamped(params, mfu):
    dev = profile()
    assert dev.mfu_at(params) == pytest.approx(mfu)
    assert dev.rate(params) == pytest.approx(1e12 * mfu)
    assert dev.hours(3.6e15, params) == pytest.approx(1.0 / mfu)
    assert dev.cost_usd(3.6e15, params) == pytest.approx(2.0 / mfu)


def test_without_a_size_or_a_table_the_scalar_mfu_holds():
    dev = profile()
    assert dev.mfu_at() == dev.mfu_at(None) == 0.5
    assert dev.rate() == dev.flops_per_s == 0.5e12
    assert dev.hours(3.6e15) == pytest.approx(2.0)
    flat = profile(mfu_by_params=())
    assert flat.mfu_at(17) == flat.mfu_at(1e9) == 0.5
    one = profile(mfu_by_params=[[5e4, 0.2]])
    assert one.mfu_at(1) == one.mfu_at(1e9) == 0.2


def test_points_are_sorted_and_kept_as_tuples():
    dev = profile(mfu_by_params=[[1e6, 0.1], ["1e4", 0.01]])
    assert dev.mfu_by_params == TABLE
    assert dev.mfu_at(1e5) == pytest.approx(0.055)


@pytest.mark.parametrize("table, words", [
    ([[1e4, 0.01], [1e4, 0.02]], r"hardware\.mfu_by_params: params 10,000 given twice"),
    ([[1e4, 1.5]], r"hardware\.mfu_by_params\[0\]: mfu must be in \(0, 1\]"),
    ([[1e4, 0.1], [0, 0.2]], r"hardware\.mfu_by_params\[1\]: params must be a finite number > 0"),
    ([[1e4, 0.1], [-5, 0.2]], r"hardware\.mfu_by_params\[1\]: params must be"),
    ([[math.inf, 0.1]], r"hardware\.mfu_by_params\[0\]: params must be"),
    ([[1e4, 0.1, 3]], r"hardware\.mfu_by_params\[0\]: expected \[params, mfu\]"),
    ([1e4, 0.1], r"hardware\.mfu_by_params\[0\]: expected \[params, mfu\]"),
    ([["big", 0.1]], r"hardware\.mfu_by_params\[0\]: expected a number, got 'big'"),
    ({1e4: 0.1}, r"hardware\.mfu_by_params: expected a list"),
    ("1e4: 0.1", r"hardware\.mfu_by_params: expected a list"),
])
def test_bad_tables_are_one_line_naming_the_key(table, words):
    with pytest.raises(hw.HardwareError, match=words) as err:
        profile(mfu_by_params=table)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("params", [0, -1, math.nan, math.inf, "big", True])
def test_a_bad_size_is_refused(params):
    with pytest.raises(hw.HardwareError, match="params: expected a finite number > 0"):
        profile().mfu_at(params)


# ---------------------------------------------------------------------------------------------
# Notes for models too small to use the device well


def test_the_h100_notes_a_17k_model_with_its_source():
    note = hw.PROFILES["h100"].note(17_256)
    assert note.startswith("at 17,256 params the h100 reaches ~0.92% of its peak (docs/anchors, eager")
    assert "none measured below 196,928 params" in note
    assert "the device is badly used" in note and "search.stack" in note and "use a CPU" in note
    assert "none measured below" not in hw.PROFILES["h100"].note(1_000_000)
    assert hw.PROFILES["a100"].note(17_256).startswith("at 17,256 params the a100 reaches ~0.92%")


@pytest.mark.parametrize("name, params", [
    ("h100", 5_000_000),     # 6.6% at 4.5M: above POOR_MFU
    ("h100", 400_000_000),
    ("h100", None),          # size unknown
    ("cpu", 17_256),         # a CPU core is well used even by a 17K model
    ("cpu", 1_000_000),
])
def test_no_note_where_the_device_is_used_well(name, params):
    assert hw.PROFILES[name].note(params) is None


def test_notes_follow_the_threshold_and_the_advice():
    dev = profile()  # 0.01 at 1e4 params, 0.1 at 1e6: under POOR_MFU (0.05) below ~8e4 params
    assert "~1% of its peak (made up; none measured below 10,000 params)" in dev.note(5e3)
    assert dev.note(5e4).startswith("at 50,000 params the dev reaches ~4.1% of its peak (made up)")  # 0.01 + 0.09 log10(5)/2
    assert dev.note(2e5) is None
    assert profile(advice="").note(5e3) is None
    assert profile(mfu_by_params=(), mfu=0.001).note(5e3) is None  # no size table: no claim by size


# ---------------------------------------------------------------------------------------------
# The profile of the recorded hardware


def test_recorded_recovers_a_power_law_of_rate_on_size():
    params = [2e4, 2e4, 1e5, 1e5, 5e5]
    rates = [1e9 * (p / 2e4) ** 0.5 for p in params]
    flops = [1e12] * len(params)
    train_s = [f / r for f, r in zip(flops, rates, strict=True)]
    rec = hw.recorded(params, flops, train_s, usd_per_hour=0.1)
    assert rec.name == "recorded"
    for p in (2e4, 1e5, 5e5):
        assert rec.rate(p) == pytest.approx(1e9 * (p / 2e4) ** 0.5)
        assert rec.hours(3.6e12, p) == pytest.approx(1 / (p / 2e4) ** 0.5)
    assert rec.rate(1e3) == pytest.approx(1e9) and rec.rate(1e9) == pytest.approx(5e9)  # clamped
    assert rec.rate() == pytest.approx(statistics.median(rates))
    assert "fitted on 5 trials" in rec.source and "3 sizes" in rec.source and "params^0.50" in rec.source
    assert rec.cost_usd(3.6e12, 2e4) == pytest.approx(0.1)
    assert rec.note(2e4) is None  # its peak is its own best rate: no claim on the device


def test_recorded_is_the_median_at_one_size_and_skips_trials_without_timings():
    rec = hw.recorded([5e4] * 5, [1e12, 1e12, 1e12, 1e12, 1e12], [10, 20, 40, None, math.nan])
    assert rec.rate(5e4) == rec.rate() == pytest.approx(1e12 / 20)
    assert "fitted on 3 trials" in rec.source and "median" in rec.source
    assert rec.usd_per_hour == 0 and "price: not known" in rec.source


def test_recorded_takes_numpy_columns_and_noisy_data():
    rng = np.random.default_rng(0)
    params = np.repeat([17_256, 45_400, 109_504, 234_912, 620_672], 18)
    rates = 2e8 * params ** 0.45 * np.exp(rng.normal(0, 0.3, params.size))
    rec = hw.recorded(params, np.full(params.size, 1e12), 1e12 / rates)
    for p in (17_256, 620_672):
        assert rec.rate(p) == pytest.approx(2e8 * p ** 0.45, rel=0.2)


@pytest.mark.parametrize("train_s", [[], [None, None], [0.0, -1.0], [math.nan, math.inf]])
def test_recorded_is_none_without_a_usable_train_s(train_s):
    n = len(train_s)
    assert hw.recorded([1e4] * n, [1e12] * n, train_s) is None


def test_recorded_needs_columns_of_one_length():
    with pytest.raises(ValueError):
        hw.recorded([1e4, 2e4], [1e12], [1.0])


# ---------------------------------------------------------------------------------------------
# The hardware: section of a space


def test_a_section_with_a_size_table():
    section = {"name": "l4", "peak_flops_per_s": "1.21e14", "mfu": 0.3, "usd_per_hour": 0.8,
               "mfu_by_params": [[1e6, 0.1], ["2e4", 0.01]]}
    l4 = hw.resolve("l4", section)
    assert l4.mfu_by_params == ((2e4, 0.01), (1e6, 0.1)) and l4.mfu_at() == 0.3
    assert l4.table_source == "the space's hardware section"
    doc = json.loads(json.dumps(l4.to_dict()))
    assert doc["mfu_by_params"] == [[2e4, 0.01], [1e6, 0.1]] and doc["flops_per_s"] == pytest.approx(1.21e14 * 0.3)
    assert hw.from_section({**section, "mfu_by_params": None}).mfu_by_params == ()


def write_space(tmp_path: Path, hardware: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(QUICKSTART.read_text() + f"hardware: {hardware}\n")
    return path


def test_the_yaml_section_takes_a_size_table(tmp_path):
    text = "{name: l4, peak_flops_per_s: 1.21e14, mfu: 0.3, usd_per_hour: 0.8, mfu_by_params: [[1e4, 0.01], [1e6, 0.1]]}"
    section = load_space(write_space(tmp_path, text)).base.hardware
    l4 = hw.from_section(section.model_dump())  # as `optimix plan SPACE.yaml` builds it
    assert l4.mfu_at(1e5) == pytest.approx(0.055)
    plain = load_space(write_space(tmp_path, "{peak_flops_per_s: 1e14, mfu: 0.3, usd_per_hour: 1}")).base.hardware
    assert hw.from_section(plain.model_dump()).mfu_by_params == ()


@pytest.mark.parametrize("table, words", [
    ("[[2e4, 1.5]]", "hardware.mfu_by_params.0.1: input should be less than or equal to 1"),
    ("[[0, 0.1]]", "hardware.mfu_by_params.0.0: input should be greater than 0"),
    ("[[2e4]]", "hardware.mfu_by_params.0"),
    ("[]", "hardware.mfu_by_params: list should have at least 1 item"),
    ("[[2e4, 0.1], [2e4, 0.2]]", "hardware.mfu_by_params: a size is given twice"),
    ("fast", "hardware.mfu_by_params"),
])
def test_bad_yaml_tables_are_one_line_naming_the_key(tmp_path, table, words):
    text = f"{{peak_flops_per_s: 1e14, mfu: 0.3, usd_per_hour: 1, mfu_by_params: {table}}}"
    with pytest.raises(SpaceError) as err:
        load_space(write_space(tmp_path, text))
    assert words in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# The built-in tables against the files they cite


def test_the_gpu_tables_are_the_anchors_eager_runs_against_the_datasheet_peak():
    doc = json.loads((ROOT / "docs" / "anchors" / "h100-small-lm.json").read_text())
    eager = [(row["params"], row["flops_s"] / hw.H100_PEAK) for row in doc["rows"] if not row["compile"]]
    assert [p for p, _ in hw.ANCHORS_EAGER] == [p for p, _ in eager]
    for (_, mine), (_, theirs) in zip(hw.ANCHORS_EAGER, eager, strict=True):
        assert mine == pytest.approx(theirs, rel=1e-3)
    assert hw.PROFILES["h100"].mfu_by_params == hw.PROFILES["a100"].mfu_by_params == hw.ANCHORS_EAGER
    assert hw.PROFILES["h100"].mfu == 0.227  # unknown size: the compiled 35M trial, as before


def test_the_cpu_table_is_the_benchmark_run_it_cites():
    doc = json.loads((ROOT / "docs" / "benchmarks" / "cpu_rate.json").read_text())
    cpu = hw.PROFILES["cpu"]
    assert cpu.peak_flops_per_s == pytest.approx(doc["matmul_flops_per_s"], rel=1e-3)
    measured = [(row["params"], row["alone_flops_per_s"]) for row in doc["rates"]]
    assert [p for p, _ in cpu.mfu_by_params] == [p for p, _ in measured]
    for params, rate in measured:
        assert cpu.rate(params) == pytest.approx(rate, rel=1e-3)
    assert cpu.rate() == pytest.approx(cpu.rate(hw.QUICKSTART_PARAMS))


def test_the_cpu_profile_is_within_2x_of_the_reproduction_at_every_size():
    """Held out: docs/reproduction/results.csv (18 trials a size, two at a time on the 2-core
    VM) is not what the cpu profile was measured on (benchmarks/cpu_rate.py)."""
    by_size: dict[int, list[dict]] = {}
    with open(ROOT / "docs" / "reproduction" / "results.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by_size.setdefault(int(row["params"]), []).append(row)
    assert len(by_size) == 5
    cpu = hw.PROFILES["cpu"]
    for params, rows in by_size.items():
        measured_s = statistics.median(float(r["train_s"]) for r in rows)
        predicted_s = cpu.hours(float(rows[0]["train_flops"]), params) * 3600
        assert 0.5 <= predicted_s / measured_s <= 2.0, (params, predicted_s, measured_s)
