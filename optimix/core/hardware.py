"""Hardware profiles: training FLOPs -> device-hours and dollars. Pure: no torch.

A profile is a peak rate, the share of it a trial achieves (MFU) and a price per device-hour:

    hours = train_flops / (peak_flops_per_s * mfu_at(params)) / 3600
    cost_usd = hours * usd_per_hour

Small models use a device badly, so the MFU may depend on the model's size: ``mfu_by_params``
holds (params, mfu) points, interpolated linearly in log params and clamped at the ends (a
size beyond the points gets the nearest point's MFU). The scalar ``mfu`` is the figure for a
trial of unknown size. ``note`` says when a size reaches under ``POOR_MFU`` of the peak.

The built-in figures and where each comes from (see also docs/plan.md):

- ``h100``: 989 TFLOP/s dense BF16, the NVIDIA H100 SXM5 datasheet (1,979 "with sparsity",
  halved). MFU by size: the anchors' eager runs (``docs/anchors/h100-small-lm.json``: one
  model a process, batches of 256 x 256 tokens) against that peak: 0.92% at 0.2M params,
  3.2% at 1.2M, 6.6% at 4.5M, 12% at 34M, 16% at 114M, 19% at 404M. optimix trials are eager
  unless ``train.compile``; compiled, the anchors reach 2.5x (4.5M) and 2.3x (34M) the eager
  figure, which the table does not apply. The steps matter as much as the size: one optimix
  trial of 0.42M params and 2K tokens a step reached 0.052% of the peak (an H200,
  ``docs/benchmarks/gpu.json``: 206,989 tokens/s x 2,488,320 FLOPs a token), 36x under the
  anchors at that size; 32 such trials stacked in one process (``search.stack``) reached 1.45%
  eager and 1.85% compiled, the anchors' figure: the table holds for steps of ~65K tokens, one
  large batch or many stacked trials. Scalar MFU 0.227, for an unknown size: optimix's own
  compiled trial of ``search_spaces/gpu.yaml`` (35M params, ``docs/benchmarks/gpu_trial.json``:
  1.056M tokens/s x 212.9M FLOPs a token = 225 TFLOP/s).
- ``a100``: 312 TFLOP/s dense BF16, the NVIDIA A100 datasheet. MFU by size and scalar: assumed
  equal to the H100's (not measured on an A100; where the launch of kernels, not arithmetic,
  bounds a step, an A100's share of its lower peak is higher, so its hours are pessimistic).
- ``cpu``: one core of the 2-core x86_64 VM (AMD EPYC) optimix's benchmarks run on, one torch
  thread a trial. Peak: one thread's fp32 matmul rate, measured (64.5 GFLOP/s). MFU by size:
  the achieved rate (``train_flops / train_s``) of trials of the study reproduction's config
  (batches of 128 x 7 tokens) at six sizes, 17K to 952K params, each trial with a core to
  itself, over that peak: 6.3 GFLOP/s at 17K params, 41.6 at 952K (``benchmarks/cpu_rate.py``,
  ``docs/benchmarks/cpu_rate.json``, "alone" medians of 5). Two trials at once on that VM each
  ran at about half ("paired"): its two vCPUs do not give two cores' throughput, so a search
  of two trials at a time there costs these device-hours but runs at up to twice the wall
  time. The scalar MFU is the table's at the quickstart's 109,888 params.
- Prices are assumptions (typical on-demand cloud prices per device-hour, late 2025), not
  quotes: give your own with a ``hardware:`` section.

``recorded(params, train_flops, train_s)`` is the profile of the machine a search ran on,
from its trials' own timings.
"""

from __future__ import annotations

import bisect
import itertools
import math
import numbers
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

POOR_MFU = 0.05
"""Under this share of its peak a model uses the device badly: ``Hardware.note`` says so."""

Points = tuple[tuple[float, float], ...]


class HardwareError(ValueError):
    """An unknown profile or a bad ``hardware:`` entry; the message is one line naming the key."""


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """One device a trial runs on."""

    name: str
    peak_flops_per_s: float
    """The device's peak rate for the precision trials use (dense, no sparsity)."""
    mfu: float
    """Achieved share of the peak (model FLOPs utilisation), in (0, 1], for an unknown size."""
    usd_per_hour: float
    """Price of one device for one hour."""
    source: str = ""
    """Where the figures come from."""
    mfu_by_params: Points = field(default=())
    """(params, mfu) points, params increasing: MFU by model size, interpolated linearly in log
    params and clamped at the ends. Empty: ``mfu`` at every size."""
    table_source: str = ""
    """The table's source in a few words, quoted by ``note``."""
    advice: str = "stack trials (search.stack) or use a CPU"
    """What ``note`` suggests for a model too small for the device; empty: no note."""

    def __post_init__(self) -> None:
        for key in ("peak_flops_per_s", "usd_per_hour"):
            value = getattr(self, key)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise HardwareError(f"hardware.{key}: expected a finite number >= 0, got {value!r}")
        if self.peak_flops_per_s <= 0:
            raise HardwareError(f"hardware.peak_flops_per_s: must be > 0, got {self.peak_flops_per_s!r}")
        if not (_is_number(self.mfu) and 0 < self.mfu <= 1):
            raise HardwareError(f"hardware.mfu: expected a number in (0, 1], got {self.mfu!r}")
        if not isinstance(self.name, str) or not self.name:
            raise HardwareError(f"hardware.name: expected a non-empty string, got {self.name!r}")
        object.__setattr__(self, "mfu_by_params", _points(self.mfu_by_params))

    def mfu_at(self, params: float | None = None) -> float:
        """MFU of a trial of ``params`` parameters; ``mfu`` when the size or the table is missing."""
        if params is None or not self.mfu_by_params:
            return self.mfu
        return interpolate(self.mfu_by_params, params)

    def rate(self, params: float | None = None) -> float:
        """Achieved FLOP/s of a trial of ``params`` parameters: peak x MFU at that size."""
        return self.peak_flops_per_s * self.mfu_at(params)

    @property
    def flops_per_s(self) -> float:
        """The rate of a trial of unknown size: peak x ``mfu``."""
        return self.rate()

    def hours(self, flops: float, params: float | None = None) -> float:
        """Device-hours to train ``flops`` on one device, a model of ``params`` parameters."""
        return flops / self.rate(params) / 3600.0

    def cost_usd(self, flops: float, params: float | None = None) -> float:
        return self.hours(flops, params) * self.usd_per_hour

    def note(self, params: float | None = None) -> str | None:
        """A line for a model too small to use the device well (MFU under ``POOR_MFU``), else None."""
        if params is None or not self.mfu_by_params or not self.advice:
            return None
        mfu = self.mfu_at(params)
        if mfu >= POOR_MFU:
            return None
        smallest = self.mfu_by_params[0][0]
        below = f"; none measured below {smallest:,.0f} params" if params < smallest else ""
        return (f"at {params:,.0f} params the {self.name} reaches ~{100 * mfu:.2g}% of its peak "
                f"({self.table_source or 'its MFU table'}{below}): the device is badly used; {self.advice}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mfu_by_params": [list(p) for p in self.mfu_by_params],
                "flops_per_s": self.flops_per_s}


def interpolate(points: Points, params: float) -> float:
    """MFU at ``params``: linear in log params between the points, clamped at the ends."""
    if not (_is_number(params) and math.isfinite(params) and params > 0):
        raise HardwareError(f"params: expected a finite number > 0, got {params!r}")
    logs = [math.log(p) for p, _ in points]
    x = math.log(params)
    if x <= logs[0]:
        return points[0][1]
    if x >= logs[-1]:
        return points[-1][1]
    i = bisect.bisect_right(logs, x)
    t = (x - logs[i - 1]) / (logs[i] - logs[i - 1])
    return points[i - 1][1] + t * (points[i][1] - points[i - 1][1])


def _points(table: Any) -> Points:
    """``table`` as sorted (params, mfu) pairs; a bad entry raises naming its index."""
    key = "hardware.mfu_by_params"
    if isinstance(table, str | bytes | Mapping) or not isinstance(table, Iterable):
        raise HardwareError(f"{key}: expected a list of [params, mfu] pairs, got {table!r}")
    out = []
    for i, pair in enumerate(table):
        if isinstance(pair, str | bytes | Mapping) or not isinstance(pair, Iterable) or len(pair := tuple(pair)) != 2:
            raise HardwareError(f"{key}[{i}]: expected [params, mfu], got {pair!r}")
        params, mfu = (_number(f"mfu_by_params[{i}]", v) for v in pair)
        if not (math.isfinite(params) and params > 0):
            raise HardwareError(f"{key}[{i}]: params must be a finite number > 0, got {pair[0]!r}")
        if not 0 < mfu <= 1:
            raise HardwareError(f"{key}[{i}]: mfu must be in (0, 1], got {pair[1]!r}")
        out.append((params, mfu))
    out.sort()
    for (a, _), (b, _) in itertools.pairwise(out):
        if a == b:
            raise HardwareError(f"{key}: params {a:,.0f} given twice")
    return tuple(out)


def _is_number(value: Any) -> bool:
    """A real number, numpy's included, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _number(key: str, value: Any) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e14 as a string; accept the short form
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HardwareError(f"hardware.{key}: expected a number, got {value!r}")
    return float(value)


# --- the built-in profiles -------------------------------------------------------------------

H100_PEAK = 989e12
# docs/anchors/h100-small-lm.json, eager rows: (params, flops_s / 989e12).
ANCHORS_EAGER: Points = (
    (196_928, 0.009248), (1_180_800, 0.03174), (4_458_752, 0.06643),
    (34_087_424, 0.1204), (114_051_840, 0.1604), (403_751_936, 0.1889),
)
CPU_PEAK = 64.53e9  # docs/benchmarks/cpu_rate.json: one thread's fp32 matmul, median of 5
# docs/benchmarks/cpu_rate.json, "alone" medians of 5: (params, flops_per_s / matmul_flops_per_s).
CPU_TABLE: Points = (
    (17_256, 0.09792), (31_200, 0.1997), (62_160, 0.2641),
    (170_160, 0.5153), (362_760, 0.6006), (952_480, 0.6452),
)
QUICKSTART_PARAMS = 109_888

_GPU_TABLE = "docs/anchors, eager, 65K tokens a step"
_GPU_ADVICE = ("one unstacked trial of 2K tokens a step does worse still (0.052% at 0.42M params, "
               "docs/benchmarks/gpu.json): stack trials (search.stack) or use a CPU")

PROFILES: dict[str, Hardware] = {
    "h100": Hardware(
        name="h100", peak_flops_per_s=H100_PEAK, mfu=0.227, usd_per_hour=2.50,
        mfu_by_params=ANCHORS_EAGER, table_source=_GPU_TABLE, advice=_GPU_ADVICE,
        source="peak: NVIDIA H100 SXM5 datasheet, BF16 dense; MFU by size: docs/anchors/h100-small-lm.json "
               "(eager, one model, batches of 256 x 256 tokens; compiled reaches 2.3-2.5x, not applied; "
               "one unstacked 0.42M-param trial of 2K tokens a step got 0.052%, 32 stacked 1.45-1.85%: "
               "docs/benchmarks/gpu.json); MFU of an unknown size: optimix gpu_trial benchmark (35M params, "
               "torch.compile, 225 TFLOP/s); price: assumed on-demand cloud rate",
    ),
    "a100": Hardware(
        name="a100", peak_flops_per_s=312e12, mfu=0.227, usd_per_hour=1.50,
        mfu_by_params=ANCHORS_EAGER, table_source=_GPU_TABLE + " on an H100, assumed", advice=_GPU_ADVICE,
        source="peak: NVIDIA A100 datasheet, BF16 dense; MFU by size and of an unknown size: assumed as "
               "measured on the H100 (docs/anchors/h100-small-lm.json, eager; docs/benchmarks/gpu_trial.json); "
               "price: assumed on-demand cloud rate",
    ),
    "cpu": Hardware(
        name="cpu", peak_flops_per_s=CPU_PEAK, mfu=interpolate(CPU_TABLE, QUICKSTART_PARAMS), usd_per_hour=0.04,
        mfu_by_params=CPU_TABLE, table_source="docs/benchmarks/cpu_rate.json, one trial a core",
        advice="stack trials (search.stack)",
        source="peak: one thread's fp32 matmul rate on one core of a 2-core x86_64 VM (AMD EPYC), measured; "
               "MFU by size: trials of study_reproduction.yaml (batches of 128 x 7 tokens, one torch thread) "
               "at 17K-952K params, each with a core to itself (benchmarks/cpu_rate.py, "
               "docs/benchmarks/cpu_rate.json); two at once on that VM each ran at about half; MFU of an "
               "unknown size: the table's at the quickstart's 109,888 params; price: assumed cloud vCPU rate",
    ),
}

_SECTION_KEYS = {"name", "peak_flops_per_s", "mfu", "usd_per_hour", "source", "mfu_by_params"}


def from_section(section: Any) -> Hardware:
    """A ``hardware:`` section of a search space as a profile (its keys are the fields)."""
    if not isinstance(section, Mapping):
        raise HardwareError(f"hardware: expected a mapping, got {type(section).__name__}")
    unknown = sorted(set(map(str, section)) - _SECTION_KEYS)
    if unknown:
        raise HardwareError(f"hardware.{unknown[0]}: unknown key (keys: {', '.join(sorted(_SECTION_KEYS))})")
    for key in ("peak_flops_per_s", "mfu", "usd_per_hour"):
        if key not in section:
            raise HardwareError(f"hardware.{key}: missing")
    values = {"name": "space", "source": "the search space's hardware section", **section}
    for key in ("peak_flops_per_s", "mfu", "usd_per_hour"):
        values[key] = _number(key, values[key])
    values["name"], values["source"] = str(values["name"]), str(values["source"])
    if values.get("mfu_by_params") is None:
        values.pop("mfu_by_params", None)
    else:
        values["table_source"] = "the space's hardware section"
    return Hardware(**values)


def resolve(name: str | None, section: Any = None) -> Hardware:
    """``--hardware NAME``: a built-in profile; else the space's section; else the H100."""
    if name is None:
        return from_section(section) if section is not None else PROFILES["h100"]
    key = name.lower()
    if key in PROFILES:
        return PROFILES[key]
    if section is not None:
        profile = from_section(section)
        if profile.name.lower() == key:
            return profile
    raise HardwareError(f"--hardware: unknown profile {name!r} (profiles: {', '.join(PROFILES)}, "
                        "or a hardware: section in the search space)")


def recorded(params: Iterable[float | None], train_flops: Iterable[float | None],
             train_s: Iterable[float | None], *, usd_per_hour: float = 0.0) -> Hardware | None:
    """The machine the trials ran on, from their own timings; None when none has a ``train_s``.

    Achieved FLOP/s by size: the least-squares line of log(train_flops / train_s) on log params
    when the sizes vary, else the median rate. The table holds the line's rate at each size seen
    (clamped outside them), as MFU against the highest of those rates: ``peak_flops_per_s`` is
    that rate, not the device's peak, so the profile gives no notes. ``mfu`` (unknown size) is
    the median rate's share. The price is not known: ``usd_per_hour`` (0 unless given).
    """
    rows = [(float(p), float(f) / float(s)) for p, f, s in zip(params, train_flops, train_s, strict=True)
            if all(_is_number(v) and math.isfinite(v) and v > 0 for v in (p, f, s))]
    if not rows:
        return None
    sizes = sorted({p for p, _ in rows})
    median = statistics.median(r for _, r in rows)
    if len(sizes) == 1:
        fitted = [(sizes[0], median)]
        how = f"the median of {len(rows)} trials' train_flops / train_s at {sizes[0]:,.0f} params"
    else:
        slope, intercept = _line([math.log(p) for p, _ in rows], [math.log(r) for _, r in rows])
        fitted = [(p, math.exp(intercept + slope * math.log(p))) for p in sizes]
        how = (f"a least-squares line of log(train_flops / train_s) on log params over {len(rows)} trials "
               f"at {len(sizes)} sizes, {sizes[0]:,.0f}-{sizes[-1]:,.0f} params (FLOP/s ~ params^{slope:.2f})")
    peak = max(median, *(r for _, r in fitted))
    return Hardware(
        name="recorded", peak_flops_per_s=peak, mfu=median / peak, usd_per_hour=usd_per_hour,
        mfu_by_params=tuple((p, r / peak) for p, r in fitted), advice="",
        table_source=f"{len(rows)} recorded trials",
        source=f"achieved FLOP/s on the recorded hardware, fitted on {len(rows)} trials: {how}; "
               "peak_flops_per_s is the highest fitted rate, not the device's peak; "
               f"price: {'given' if usd_per_hour else 'not known'}",
    )


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Slope and intercept of the least-squares line y = intercept + slope * x."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx
