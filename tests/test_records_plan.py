"""``optimix plan`` over the records a real search wrote: a tiny quickstart search through the
command line (real Ray, real MLflow in SQLite; ``plan_records`` in conftest.py), then
``--budget-flops --verify``, ``--validate`` and ``--target-acc`` on its experiment. The records carry what fabricated ones never did:
``shape.*`` params (the shape each trial built) next to the config's keys.
"""

from __future__ import annotations

import json

import pytest

from optimix.plan import plan, verify

from conftest import plan_cli

pytestmark = pytest.mark.slow


def test_verify_trains_the_recommended_config_from_real_records(plan_records, capsys):
    uri, record = plan_records
    budget = max(t.metrics["train_flops"] for t in record.trials)
    code, doc, err = plan_cli(uri, capsys, "--budget-flops", f"{budget:.6g}", "--verify", "--verify-seeds", "1")
    assert code == 0, err
    pred, ver = doc["predicted"], doc["verify"]
    assert ver["status"] == "ok" and ver["error"] is None
    assert 0 <= ver["achieved"] <= 1 and ver["predicted"] == pred["acc/facts"]
    assert ver["shape_from"] in {t.run_id for t in record.trials}
    # The recommended size is a recorded one, so the trial ran at exactly that size.
    assert ver["params"] == pred["config"]["params"] in {t.metrics["params"] for t in record.trials}
    assert ver["tokens"] >= pred["config"]["tokens"] and ver["train_flops"] > 0


def test_verify_tree_rebuilds_each_recorded_trial(plan_records):
    """At a trial's own size, frequency and tokens the tree is that trial's config: every
    config param as recorded, and the recorded shape (``shape.*``) built again."""
    from optimix.core.config import flatten
    from optimix.core.space import build_space
    from optimix.trial.train import plan_trial

    _, record = plan_records
    for trial in record.trials:
        config = plan.Config(params=trial.metrics["params"],
                             rare_freq=float(trial.params["mixture.rare_freq"]),
                             tokens=float(trial.params["train.tokens"]), train_flops=0.0)
        rebuilt = build_space(verify.verify_tree(trial.params, config, trial.metrics["params"])).base
        got = {k: json.dumps(v) if isinstance(v, list) else str(v)  # as the tracker logs them
               for k, v in flatten(rebuilt.model_dump(mode="json")).items()}
        want = {k: v for k, v in trial.params.items()
                if k.split(".")[0] not in ("shape", "search", "model")}
        assert {k: got[k] for k in want} == want
        shape = plan_trial(rebuilt).shape
        assert {f"shape.{k}": str(getattr(shape, k)) for k in
                ("d_model", "n_layer", "n_head", "d_ff", "n_vocab", "n_ctx")} == \
            {k: v for k, v in trial.params.items() if k.startswith("shape.")}
        assert shape.params == trial.metrics["params"]


def test_validate_and_target_acc_on_real_records(plan_records, capsys):
    uri, record = plan_records
    code, doc, err = plan_cli(uri, capsys, "--validate")
    assert code == 0, err
    val = doc["validate"]
    assert val["trials"] == len(record.trials) and val["judged_on"] == "config"
    assert "2 recorded size(s)" in val["splits"]["size"]["skipped"]  # two widths: no size to hold out
    split = val["splits"]["config"]
    assert split["method"] == "leave one config out"
    assert set(split["run_id"]) == {t.run_id for t in record.trials}
    assert 0 < split["predicted"] <= len(record.trials) and 0 <= split["mae"] <= 1

    accs = {t.run_id: t.metrics["acc/facts"] for t in record.trials}
    assert max(accs.values()) >= 0.5  # rare_freq 0.4 on eight facts is learnt
    code, doc, err = plan_cli(uri, capsys, "--target-acc", "0.5")
    assert code == 0, err
    cheapest = min((t for t in record.trials if accs[t.run_id] >= 0.5),
                   key=lambda t: (t.metrics["train_flops"], -accs[t.run_id]))
    assert doc["query"] == {"target_acc": 0.5}
    assert doc["observed"]["train_flops"] == cheapest.metrics["train_flops"]
    assert doc["observed"]["acc/facts"] >= 0.5
    assert doc["predicted"] is not None or doc["predicted_error"]
