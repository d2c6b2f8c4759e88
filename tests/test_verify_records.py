"""``optimix plan --verify`` on the records a real search wrote: the six-trial quickstart search
of ``test_records_plan.py`` (real Ray, real MLflow in SQLite; ``plan_records`` in conftest.py,
run once for both).

What a real search's records showed: every recommendation on them is a recorded trial's own
point (its size and frequency are recorded values), and verify trained it with the recorded
seed, so it replayed that trial and "achieved" the very accuracy the fit was made from. The
trial that lent the config was the first of the nearest size in the table, not the one nearest
the recommendation, and it was found by row position in the records. Most tests here stand a
recorder in for the trainer (``run_trial``) and look at the config verify builds; the last one
trains.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from optimix.core.config import flatten
from optimix.plan import verify
from optimix.trial.train import TrialResult, plan_trial

from conftest import plan_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def trainer(monkeypatch):
    """``run_trial`` replaced by a recorder: ``.configs`` it was given, ``.acc`` it answers."""
    from optimix.trial import train

    state = SimpleNamespace(configs=[], acc=0.5)

    def run(config, **_):
        state.configs.append(config)
        plan_ = plan_trial(config)
        return TrialResult(status="ok", params=plan_.shape.params, non_embedding_params=0,
                           tokens=plan_.tokens, train_flops=plan_.train_flops,
                           accuracy={"facts": state.acc})

    monkeypatch.setattr(train, "run_trial", run)
    return state


def doc_at(trial, interval=(0.0, 1.0), **extra) -> dict:
    """An answer document whose predicted config is ``trial``'s own point."""
    point = {"params": trial.metrics["params"], "rare_freq": float(trial.params["mixture.rare_freq"]),
             "tokens": float(trial.params["train.tokens"]), "train_flops": trial.metrics["train_flops"]}
    return {"task": "facts", "metric": "acc/facts",
            "predicted": {"config": point, "acc/facts": 0.5, "interval": list(interval), **extra}}


def as_logged(config) -> dict[str, str]:
    """A trial config's params as the tracker logs them."""
    return {k: json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in flatten(config.model_dump(mode="json")).items()}


def table_of(record):
    from optimix.core.fit import TrialTable

    return TrialTable.from_records(record.trials, "acc/facts")


def test_at_a_recorded_point_verify_trains_that_trial_at_a_seed_no_trial_used(plan_records, trainer):
    """Each recorded trial's own point: the new trial is that trial (every config param as
    recorded, the recorded shape, the recorded tokens) but for its seed, which no trial used."""
    _, record = plan_records
    table = table_of(record)
    assert {t.params["seed"] for t in record.trials} == {"0"}
    for trial in record.trials:
        ver = verify.verify(doc_at(trial), table, record.trials, seeds=1)
        config = trainer.configs[-1]
        assert ver["shape_from"] == trial.run_id, "the trial at the recommendation lends its config"
        assert ver["seed"] == config.seed == 1
        got = as_logged(config)
        want = {k: v for k, v in trial.params.items() if k.split(".")[0] not in ("shape", "search", "model")}
        assert {k: got[k] for k in want} == {**want, "seed": "1"}
        shape = plan_trial(config).shape
        assert {f"shape.{k}": str(getattr(shape, k)) for k in ("d_model", "n_layer", "n_head", "d_ff")} == \
            {k: v for k, v in trial.params.items() if k.startswith("shape.") and k[6:] in verify._SHAPE_KEYS}
        assert ver["params"] == trial.metrics["params"] and ver["tokens"] == trial.metrics["tokens"]
        assert ver["rare_freq"] == float(trial.params["mixture.rare_freq"])


def test_a_seed_given_to_verify_is_the_trial_s_seed(plan_records, trainer):
    _, record = plan_records
    verify.verify(doc_at(record.trials[0]), table_of(record), record.trials, seed=0, seeds=1)
    assert trainer.configs[-1].seed == 0  # seed 0 replays the recorded trial


def test_records_are_matched_to_table_rows_by_run_id(plan_records, trainer):
    """The records in another order than the table's rows: the same trial lends the config."""
    _, record = plan_records
    table = table_of(record)
    for trial in record.trials:
        in_order = verify.verify(doc_at(trial), table, record.trials, seeds=1)
        mixed = verify.verify(doc_at(trial), table, record.trials[::-1], seeds=1)
        assert in_order["shape_from"] == mixed["shape_from"] == trial.run_id
        assert as_logged(trainer.configs[-1]) == as_logged(trainer.configs[-2])


def test_between_the_recorded_sizes_the_trained_model_has_the_recommended_size(plan_records, trainer):
    """A size no trial had (``--params`` asks for any): the nearest trial's depth and heads,
    a width and MLP width that meet the count (the shape rule missed it by up to 20%)."""
    import math

    _, record = plan_records
    table = table_of(record)
    sizes = sorted({t.metrics["params"] for t in record.trials})
    for target in (0.6 * sizes[0], math.sqrt(sizes[0] * sizes[-1]), 3 * sizes[-1]):
        doc = doc_at(record.trials[0])
        doc["predicted"]["config"]["params"] = target
        ver = verify.verify(doc, table, record.trials, seeds=1)
        lender = next(t for t in record.trials if t.run_id == ver["shape_from"])
        shape = plan_trial(trainer.configs[-1]).shape
        assert (shape.n_layer, shape.n_head) == (int(lender.params["shape.n_layer"]),
                                                 int(lender.params["shape.n_head"]))
        assert ver["params"] == shape.params and abs(math.log(ver["params"] / target)) < 0.01
        assert ver["requested"]["params"] == round(target)


def test_within_interval_is_judged_against_one_trial_s_interval_when_the_answer_has_one(plan_records, trainer):
    """``trial_interval`` (one trained trial, seed noise included) when the answer has it, else
    ``interval`` (the mean over seeds); both are returned."""
    _, record = plan_records
    table, trial = table_of(record), record.trials[0]
    trainer.acc = 0.6
    ver = verify.verify(doc_at(trial, (0.40, 0.45), trial_interval=[0.2, 0.7]), table, record.trials, seeds=1)
    assert (ver["achieved"], ver["within_interval"], ver["checked_against"]) == (0.6, True, "trial_interval")
    assert ver["interval"] == [0.40, 0.45] and ver["trial_interval"] == [0.2, 0.7]
    ver = verify.verify(doc_at(trial, (0.40, 0.45)), table, record.trials, seeds=1)
    assert (ver["within_interval"], ver["checked_against"], ver["trial_interval"]) == (False, "interval", None)
    trainer.acc = 0.42
    ver = verify.verify(doc_at(trial, (0.40, 0.45), trial_interval=[0.5, 0.9]), table, record.trials, seeds=1)
    assert ver["within_interval"] is False  # inside the mean's interval, outside one trial's
    ver = verify.verify(doc_at(trial, (None, 0.45)), table, record.trials, seeds=1)
    assert (ver["within_interval"], ver["checked_against"], ver["interval"]) == (None, None, None)


def test_verify_trains_a_target_answer_from_real_records(plan_records, capsys):
    """The command line, the real trainer: ``--target-acc 0.5 --verify`` trains the recommended
    config at three fresh seeds and judges their mean against the mean's interval, each seed
    against one trial's."""
    uri, record = plan_records
    code, doc, err = plan_cli(uri, capsys, "--target-acc", "0.5", "--verify")
    assert code == 0, err
    pred, ver = doc["predicted"], doc["verify"]
    assert ver["status"] == "ok" and ver["error"] is None and 0 <= ver["achieved"] <= 1
    assert ver["seeds"] == [1, 2, 3] and ver["shape_from"] in {t.run_id for t in record.trials}
    assert ver["achieved"] == pytest.approx(sum(ver["achieved_seeds"]) / 3)
    assert ver["rare_freq"] == pytest.approx(pred["config"]["rare_freq"])
    assert ver["requested"]["params"] == pred["config"]["params"]
    assert ver["interval"] == pred["interval"] and ver["trial_interval"] == pred.get("trial_interval")
    against = ver["interval"] or ver["trial_interval"]
    assert ver["checked_against"] == ("interval" if ver["interval"] else "trial_interval")
    assert ver["within_interval"] == (against[0] <= ver["achieved"] <= against[1])
    if ver["trial_interval"]:
        lo, hi = ver["trial_interval"]
        assert ver["seeds_within_trial_interval"] == [lo <= a <= hi for a in ver["achieved_seeds"]]
