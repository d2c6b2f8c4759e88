"""Every grow-or-boost answer states its regime: tokens per parameter and whether the
learning rate was searched at each size, and where the larger sizes trained far below ~20
tokens per parameter or at one learning rate, that the comparison favours the smaller model
and which search settles it. The rule by hand (``optimix.core.regime``); then ``optimix
plan``, ``optimix frontier`` and the map on the parent run over a real recorded search
(``plan_records`` in conftest.py: two widths on 15,000 tokens at one learning rate, the unfair
regime); then ``search_spaces/grow_or_boost.yaml``, the search that settles it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optimix.core import regime
from optimix.core.regime import COMPUTE_OPTIMAL, FAR_BELOW, SETTLE_WITH

from conftest import PLAN_EXPERIMENT, plan_cli

SETTLING = Path(__file__).resolve().parent.parent / SETTLE_WITH

# (params, tokens, lr) per trial; sizes 10K and 40K.
FAIR = [(10_000, 2e6, 1e-2), (10_000, 2e6, 3e-3), (40_000, 1e6, 3e-3), (40_000, 1e6, 1e-3)]


@pytest.mark.parametrize("trials, why", [
    # |            trials                                                   | why it favours the smaller |
    (FAIR, []),
    ([(10_000, 2e6, 1e-2), (40_000, 1e5, 3e-3), (40_000, 1e5, 1e-3)], ["far below 20 tokens"]),
    ([(10_000, 2e6, 1e-2), (40_000, 1e6, 3e-3), (40_000, 1e6, 3e-3)], ["single learning rate"]),
    ([(10_000, 1e4, 3e-3), (40_000, 1e4, 3e-3)], ["far below 20 tokens", "single learning rate"]),
    # The smallest size's regime decides nothing: it is the one a bad regime favours.
    ([(10_000, 1e4, 3e-3), (40_000, 1e6, 3e-3), (40_000, 1e6, 1e-3)], []),
    # A larger size counts as trained by its longest trial.
    ([(10_000, 2e6, 1e-2), (40_000, 1e5, 3e-3), (40_000, 1e6, 1e-3)], []),
    # Exactly at the bar is not below it.
    ([(10_000, 2e6, 1e-2), (40_000, 40_000 * FAR_BELOW, 3e-3), (40_000, 1e5, 1e-3)], []),
    # One size: nothing compared, nothing favoured.
    ([(40_000, 1e4, 3e-3), (40_000, 1e4, 3e-3)], []),
])
def test_the_rule(trials, why):
    reg = regime.regime(trials)
    assert reg.favours_smaller == bool(why)
    assert len(reg.why) == len(why) and all(w in text for w, text in zip(why, reg.why, strict=True))
    doc = reg.to_dict()
    assert doc["settle_with"] == (SETTLE_WITH if why else None)
    assert (doc["verdict"] is not None) == bool(why)
    if why:
        assert "favours the smaller model" in doc["verdict"] and SETTLE_WITH in doc["verdict"]


def test_each_size_says_its_tokens_per_parameter_and_learning_rates():
    reg = regime.regime([*FAIR, (40_000, 4e5, 1e-3), (80_000, 8e5, None), (0, 1e6, 1e-3), (10_000, 0, 1e-3)])
    assert [s.params for s in reg.sizes] == [10_000, 40_000, 80_000]  # no size or no tokens: left out
    small, large, unknown = reg.sizes
    assert small.tokens_per_param == (200, 200) and small.lrs == (3e-3, 1e-2) and small.lr_searched
    assert large.tokens_per_param == (10, 25) and large.trials == 3 and large.lrs == (1e-3, 3e-3)
    assert unknown.lrs == () and unknown.lr_searched is None  # unknown is not "one"
    assert reg.to_dict()["lines"] == [
        "10,000 params: 200 tokens/param, lr searched (2 values, 0.003-0.01) (2 trials)",
        "40,000 params: 10-25 tokens/param, lr searched (2 values, 0.001-0.003) (3 trials)",
        "80,000 params: 10 tokens/param, lr not recorded (1 trial)"]
    # Learning rates equal to six digits are one rate (a float logged as text and read back).
    assert regime.regime([(1e4, 1e6, 0.003), (1e4, 1e6, 0.0030000000001)]).sizes[0].lrs == (0.003,)


# ---------------------------------------------------------------------------------------------
# Over a real recorded search


def cli_text(capsys, *args: str) -> str:
    """What ``optimix ARGS`` prints on stdout, run in-process; it must succeed."""
    from optimix.cli import main as cli_main

    try:
        cli_main(list(args))
    except SystemExit as done:
        assert done.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


@pytest.mark.slow
def test_plan_states_the_regime_and_its_caution(plan_records, capsys):
    uri, record = plan_records
    budget = max(t.metrics["train_flops"] for t in record.trials)
    code, doc, err = plan_cli(uri, capsys, "--budget-flops", f"{budget:.6g}")
    assert code == 0, err
    reg = doc["regime"]
    sizes = sorted({t.metrics["params"] for t in record.trials})
    assert [s["params"] for s in reg["sizes"]] == sizes
    for size in reg["sizes"]:
        mine = [t for t in record.trials if t.metrics["params"] == size["params"]]
        assert size["trials"] == len(mine)
        assert size["tokens_per_param"][1] == pytest.approx(max(t.metrics["tokens"] for t in mine) / size["params"])
        assert size["lrs"] == [float(t.params["train.lr"]) for t in mine][:1] and size["lr_searched"] is False
    # 15,000 tokens at one learning rate: the larger width is far below 20 tokens per parameter.
    assert reg["favours_smaller"] and reg["settle_with"] == SETTLE_WITH
    assert any("far below" in w for w in reg["why"]) and any("single learning rate" in w for w in reg["why"])
    cmp_ = doc["frequency_vs_size"]
    if cmp_ is not None:  # the sizes the verdict compares, in tokens per parameter
        per = cmp_["tokens_per_param"]
        assert per["base"] == pytest.approx(cmp_["base"]["tokens"] / cmp_["base"]["params"], rel=1e-3)
        assert per["double_params"] == pytest.approx(cmp_["double_params"]["tokens"] / cmp_["double_params"]["params"])

    text = cli_text(capsys, "plan", "--experiment", PLAN_EXPERIMENT, "--tracking-uri", uri,
                    "--budget-flops", f"{budget:.6g}")
    line = next(x for x in text.splitlines() if x.startswith("regime"))
    assert all(f"{n:,.0f} params" in line for n in sizes) and "lr" in line and "only" in line
    assert "caution: the comparison favours the smaller model" in text and SETTLE_WITH in text


@pytest.mark.slow
def test_frontier_and_map_state_the_regime(plan_records, capsys):
    from optimix.plan import plots

    uri, record = plan_records
    text = cli_text(capsys, "frontier", "--experiment", PLAN_EXPERIMENT, "--tracking-uri", uri)
    assert "regime      " in text and "tokens/param" in text and SETTLE_WITH in text

    rows = plots.rows_from_records(record.trials, record.objectives)
    caption = plots.map_caption(rows)
    assert caption.startswith("Regime: ") and "tokens/param" in caption
    assert "favours the smaller model" in caption and SETTLE_WITH in caption
    x, y = plots.axes_for(record.objectives)
    assert plots.rare_map(rows, y).startswith(b"\x89PNG")
    assert plots.map_caption([{**r, "tokens": None} for r in rows]) == ""  # nothing to state


@pytest.mark.slow
def test_the_search_summary_states_the_regime_of_the_sizes_it_compares(quickstart_search, plan_records):
    """``optimix search`` ends with the same regime lines as ``optimix frontier``, under the
    frontier it printed: its two widths trained at one learning rate."""
    from optimix.plan.plan_table import trial_regime

    uri, record = plan_records
    expected = trial_regime(record.trials).to_dict()
    out = quickstart_search.stdout
    assert "regime      " + "; ".join(expected["lines"]) in out
    assert f"caution: {expected['verdict']}" in out
    assert out.index("Pareto frontier") < out.index("regime      ") < out.index("MLflow: parent run")


@pytest.mark.slow
def test_the_map_on_the_parent_run_is_drawn_from_the_ledger_with_its_regime(quickstart_search, plan_records):
    """The search driver draws the map from its ledger entries (``rows_from_entries``): they
    carry the tokens and learning rates the caption needs, and the map is on the parent run."""
    from mlflow.tracking import MlflowClient

    from optimix.core.entry import LedgerEntry
    from optimix.plan import plots

    uri, record = plan_records
    (ledger,) = (quickstart_search.root / "runs").rglob("results.jsonl")
    lines = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    entries = [LedgerEntry.from_json(line) for line in lines if "status" in line]
    rows = plots.rows_from_entries(entries, {}, (), record.objectives)
    assert plots.map_caption(rows) == plots.map_caption(plots.rows_from_records(record.trials, record.objectives))
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(record.run_id)}
    assert "rare_map.png" in artifacts


# ---------------------------------------------------------------------------------------------
# The search that settles it


def test_grow_or_boost_space_settles_the_comparison():
    """Three sizes, the learning rate searched with them (log scale), and a token budget
    that gives the largest at least 20 tokens per parameter, on the quickstart's tasks."""
    import yaml

    from optimix.core.space import load_space
    from optimix.trial.train import plan_trial

    space = load_space(SETTLING)
    sizes, lr, tokens = (space.dimensions[k] for k in ("model.params", "train.lr", "train.tokens"))
    assert len(sizes.values) == 3 and max(sizes.values) / min(sizes.values) >= 4
    assert lr.dist == "loguniform" and lr.high / lr.low >= 10
    largest = plan_trial(space.resolve({"model.params": max(sizes.values), "train.tokens": max(tokens.values)}))
    assert largest.tokens / largest.shape.params >= COMPUTE_OPTIMAL
    quickstart = yaml.safe_load((SETTLING.parent / "quickstart.yaml").read_text())
    assert space.tree["tasks"] == quickstart["tasks"]
    assert space.tree["mixture"]["rare_task"] == quickstart["mixture"]["rare_task"]
