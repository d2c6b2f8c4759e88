"""``optimix plan`` over the records a real search wrote: a tiny quickstart search through the
command line (real Ray, real MLflow in SQLite), then ``--budget-flops --verify``, ``--validate``
and ``--target-acc`` on its experiment. The records carry what fabricated ones never did:
``shape.*`` params (the shape each trial built) next to the config's keys.
"""

from __future__ import annotations

import json
import shutil

import pytest

from optimix.cli import main as cli_main
from optimix.plan import plan, verify

from cluster_fixtures import base_env, optimix_search, short_tmp

pytestmark = pytest.mark.slow

EXPERIMENT = "records"
# Every trial at a fixed point (two widths, rare frequencies from starved to saturated), so the
# records are the same from run to run whatever the sampler would have picked.
POINTS = [(32, 0.4), (32, 0.1), (32, 0.02), (64, 0.3), (64, 0.05), (64, 0.01)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(tracking URI, the search as ``load_search`` reads it) of one real six-trial search."""
    from optimix.records.records import load_search

    root = tmp_path_factory.mktemp("records")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    points = json.dumps([{"model.d_model": d, "mixture.rare_freq": f} for d, f in POINTS])
    ray_tmp = short_tmp("rp")
    try:
        done = optimix_search(
            root, "--trials", str(len(POINTS)), "--max-concurrent", "2", "--seed", "0",
            "--tracking-uri", uri, "--experiment", EXPERIMENT, "--storage-path", str(root / "runs"),
            "--set", f"search.points_to_evaluate={points}",
            env=base_env(RAY_TMPDIR=str(ray_tmp)), timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.describe()
    record = load_search(uri, EXPERIMENT)
    assert len(record.trials) == len(POINTS) and all(t.status == "ok" for t in record.trials)
    assert all("shape.d_model" in t.params for t in record.trials)  # what made verify fail
    return uri, record


def plan_cli(uri: str, capsys, *args: str) -> tuple[int | str | None, dict, str]:
    """``optimix plan --json ARGS`` on the search's records, in-process: (exit status, document, stderr)."""
    code: int | str | None = 0
    try:
        cli_main(["plan", "--experiment", EXPERIMENT, "--tracking-uri", uri, "--json", *args])
    except SystemExit as done:
        code = done.code
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def test_verify_trains_the_recommended_config_from_real_records(recorded, capsys):
    uri, record = recorded
    budget = max(t.metrics["train_flops"] for t in record.trials)
    code, doc, err = plan_cli(uri, capsys, "--budget-flops", f"{budget:.6g}", "--verify")
    assert code == 0, err
    pred, ver = doc["predicted"], doc["verify"]
    assert ver["status"] == "ok" and ver["error"] is None
    assert 0 <= ver["achieved"] <= 1 and ver["predicted"] == pred["acc/facts"]
    assert ver["shape_from"] in {t.run_id for t in record.trials}
    # The recommended size is a recorded one, so the trial ran at exactly that size.
    assert ver["params"] == pred["config"]["params"] in {t.metrics["params"] for t in record.trials}
    assert ver["tokens"] >= pred["config"]["tokens"] and ver["train_flops"] > 0


def test_verify_tree_rebuilds_each_recorded_trial(recorded):
    """At a trial's own size, frequency and tokens the tree is that trial's config: every
    config param as recorded, and the recorded shape (``shape.*``) built again."""
    from optimix.core.config import flatten
    from optimix.core.space import build_space
    from optimix.trial.train import plan_trial

    _, record = recorded
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


def test_validate_and_target_acc_on_real_records(recorded, capsys):
    uri, record = recorded
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
