"""A user's own facts from a file, scored on the training rows (``eval: train``): memorisation,
reported as such. The default (``eval: heldout``) never scores a prompt that training saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optimix.cli import main as cli_main
from optimix.core.space import build_space
from optimix.trial.tasks import build_tasks, scored_on
from optimix.trial.train import run_trial

from conftest import tiny_space


def catalogue(path, n: int = 24) -> None:
    """Product codes and names: nothing to infer, everything to memorise."""
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    rows = [{"prompt": f"sku{i:03d}", "answer": "".join(rng.choice(letters, 4))} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def tree(path, scored: str, freq: float = 0.5, tokens: int = 120_000) -> dict:
    return tiny_space("memorise",
                      tasks={"background": {"n_facts": 200},
                             "skus": {"kind": "dataset", "path": str(path), "eval": scored}},
                      mixture={"rare_task": "skus", "rare_freq": freq},
                      model={"d_model": None, "n_layer": None, "n_head": None, "params": 60_000},
                      train={"tokens": tokens, "batch_size": 64, "lr": 0.003, "device": "cpu"},
                      eval={"points": 1}, search=None)


def test_train_rows_are_the_evaluation_set_and_heldout_ones_are_not(tmp_path):
    catalogue(tmp_path / "skus.json")
    for scored in ("train", "heldout"):
        config = build_space(tree(tmp_path / "skus.json", scored)).base
        task = build_tasks(config).tasks["skus"]
        trained = {row.tobytes() for row in task.sample(np.random.default_rng(0), 5000)[0]}
        evaluated = {row.tobytes() for row in task.eval_ids}
        if scored == "train":
            assert len(task.eval_ids) == 24 and evaluated <= trained
            assert scored_on(config.tasks["skus"]) == "trained"
        else:
            assert not evaluated & trained
            assert scored_on(config.tasks["skus"]) == "held-out"


def test_a_memorised_catalogue_reaches_090_at_a_high_frequency(tmp_path):
    catalogue(tmp_path / "skus.json")
    result = run_trial(build_space(tree(tmp_path / "skus.json", "train")).base)
    assert result.status == "ok"
    assert result.accuracy["skus"] >= 0.9, result.accuracy


def test_optimix_train_says_what_each_task_is_scored_on(tmp_path, capsys):
    import yaml

    catalogue(tmp_path / "skus.json")
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(tree(tmp_path / "skus.json", "train", tokens=4000)))
    cli_main(["train", str(tmp_path / "space.yaml")])
    out = capsys.readouterr().out
    assert "skus" in out and "trained items (memorisation)" in out
    line = next(line for line in out.splitlines() if line.startswith("background"))
    assert line.endswith("trained items (memorisation)")


def test_eval_must_be_train_or_heldout(tmp_path):
    from optimix.core.config import SpaceError

    catalogue(tmp_path / "skus.json")
    with pytest.raises(SpaceError, match=r"^tasks\.skus\.eval"):
        build_space(tree(tmp_path / "skus.json", "test"))
