"""Evaluation: exact-match accuracy and loss per task on its evaluation set.

Exact match by teacher forcing is exactly greedy decoding's exact match: if the argmax at
every answer position equals the answer token given the true prefix, greedy decoding
produces that same prefix step by step and so the whole answer; if some argmax is wrong,
greedy decoding goes wrong at the first such position. So one forward pass per batch
gives the greedy exact-match accuracy without a decoding loop.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F

from optimix.trial.tasks import IGNORE, TaskSet, shift_targets


@torch.no_grad()
def evaluate(model, taskset: TaskSet, device: torch.device, batch_size: int = 1024,
             autocast_dtype: torch.dtype | None = None, tasks: Collection[str] | None = None,
             ) -> tuple[dict[str, float], dict[str, float]]:
    """(accuracy, loss) per task (every task, or those in ``tasks``) on their evaluation sets;
    loss is mean per answer token."""
    was_training = model.training
    model.eval()
    accuracy, loss = {}, {}
    for name, task in taskset.tasks.items():
        if tasks is not None and name not in tasks:
            continue
        correct = 0
        loss_sum, n_tokens = 0.0, 0
        targets_all = shift_targets(task.eval_ids, task.eval_mask)
        for start in range(0, len(task.eval_ids), batch_size):
            ids = torch.from_numpy(task.eval_ids[start:start + batch_size]).to(device)
            targets = torch.from_numpy(targets_all[start:start + batch_size]).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = model(input_ids=ids).logits
            logits = logits.float()
            scored = targets != IGNORE
            hits = (logits.argmax(-1) == targets) | ~scored
            # text: next-token accuracy over the scored pieces; else exact match of the answer
            correct += int((hits & scored).sum()) if task.kind == "text" else int(hits.all(dim=1).sum())
            loss_sum += float(F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1),
                                              ignore_index=IGNORE, reduction="sum"))
            n_tokens += int(scored.sum())
        accuracy[name] = correct / (max(n_tokens, 1) if task.kind == "text" else len(task.eval_ids))
        loss[name] = loss_sum / max(n_tokens, 1)
    model.train(was_training)
    return accuracy, loss
