"""The card a saved model carries (``optimix.json``): how each task's prompts are written,
with an example from its evaluation set and the true answer. Written by the trial beside
the ``save_pretrained`` folder; read by the served model (``served_model`` in ``optimix.records.records``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from optimix.trial.tasks import EOS, PAD, SEP, TaskSet

CARD = "optimix.json"


def describe(taskset: TaskSet) -> dict[str, Any]:
    """Per task: how a prompt is written (``input``), how long an answer is, and an example
    from the evaluation set with its answer."""
    tokens = taskset.vocab.tokens
    out = {}
    for name, task in taskset.tasks.items():
        ids, mask = task.eval_ids[0], task.eval_mask[0]
        if task.kind == "text":
            out[name] = {"kind": task.kind, "input": "text", "width": task.width}
            continue
        chars = task.kind == "dataset"
        sep = int(np.flatnonzero(ids == SEP)[0])
        answer = [int(t) for t in ids[mask] if int(t) not in (EOS, PAD)]

        def show(part, chars=chars):
            return "".join(chr(int(tokens[t][3:-1], 16)) for t in part) if chars else \
                " ".join(tokens[t] for t in part)

        out[name] = {"kind": task.kind, "input": "chars" if chars else "tokens",
                     "answer_tokens": int(mask.sum()), "width": task.width,
                     "example": {"prompt": show([int(t) for t in ids[1:sep]]), "answer": show(answer)}}
    return {"format": 1, "tasks": out}


def write_card(taskset: TaskSet, model_dir: str | Path) -> None:
    (Path(model_dir) / CARD).write_text(json.dumps(describe(taskset), indent=2) + "\n")
