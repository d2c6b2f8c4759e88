"""Stacked training (``optimix.trial.stacked``) against the one-by-one trial runner, on CPU in fp32.

Each test trains tiny models (d_model 32, 2 layers, 47 steps of 16 sequences) with
``run_stacked`` and again one by one with ``run_trial``, and requires the same results: final
parameters, learning curves, statuses. Agreement is up to float rounding (batched and per-model
kernels may sum in different orders), far inside the tolerances below.
"""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from optimix.core.space import build_space
from optimix.trial.model import Shape, build_model
from optimix.trial.stacked import StackedLlama, per_model_loss, run_stacked
from optimix.trial.tasks import IGNORE
from optimix.trial.train import run_trial

from conftest import tiny_space


def config(seed: int = 0, rare_freq: float = 0.05, d_model: int = 32, tokens: int = 6000, **train):
    """A tiny trial: 5 tasks, 2 layers, 47 steps of 16 sequences of 8 tokens, 3 evaluations."""
    tree = tiny_space("stacked", seed=seed,
                      tasks={"copy": {}, "reverse": {}, "background": {"n_facts": 200}, "facts": {}, "modadd": {}},
                      mixture={"rare_freq": rare_freq}, model={"d_model": d_model, "n_layer": 2},
                      train={"tokens": tokens, "batch_size": 16, "device": "cpu", **train},
                      eval={"points": 3, "size": 32}, search=None)
    return build_space(tree).base


def assert_same_result(stacked, single) -> None:
    assert (stacked.status, stacked.error) == (single.status, single.error)
    assert (stacked.steps, stacked.planned_steps) == (single.steps, single.planned_steps)
    assert (stacked.tokens, stacked.train_flops) == (single.tokens, single.train_flops)
    assert (stacked.params, stacked.shape, stacked.device) == (single.params, single.shape, single.device)
    assert [p.step for p in stacked.curve] == [p.step for p in single.curve]
    for a, b in zip(stacked.curve, single.curve, strict=True):
        assert a.accuracy == b.accuracy
        assert a.train_loss == pytest.approx(b.train_loss, abs=1e-4)
        assert a.loss == pytest.approx(b.loss, abs=1e-4)
    assert stacked.accuracy == single.accuracy
    assert stacked.loss == pytest.approx(single.loss, abs=1e-4)


def assert_same_params(a: LlamaForCausalLM, b: LlamaForCausalLM, atol: float = 1e-4) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], atol=atol, rtol=0, msg=key)


def train_both(configs, tmp_path):
    """``run_stacked`` and one-by-one ``run_trial`` results, and both sets of final models."""
    stacked_dirs = [tmp_path / f"stacked{k}" for k in range(len(configs))]
    single_dirs = [tmp_path / f"single{k}" for k in range(len(configs))]
    stacked = run_stacked(configs, cpus=1, save_dirs=stacked_dirs)
    single = [run_trial(c, cpus=1, save_dir=d) for c, d in zip(configs, single_dirs, strict=True)]
    return stacked, single, stacked_dirs, single_dirs


# ---------------------------------------------------------------------------------- model


@pytest.mark.parametrize("tied", [False, True])
def test_stacked_forward_and_gradients_match_each_model(tied):
    shape = Shape(32, 2, 2, 96, 40, 9, tied)
    models = [build_model(shape, seed) for seed in range(3)]
    stack = StackedLlama.from_models(models)
    ids = torch.randint(0, 40, (3, 4, 9), generator=torch.Generator().manual_seed(0))
    ids[:, :, -3:] = 0  # trailing pads: the embedding's pad row gets no gradient from them
    targets = torch.where(ids > 20, ids, IGNORE)
    logits = stack(ids)
    with torch.autograd.enforce_grad_layout_policy(False):  # grads are strided views, as run_stacked's
        per_model_loss(logits, targets).sum().backward()
    gradients = StackedLlama(models[0].config, 3)  # a stack holding the gradients, to export them
    gradients.flat.copy_(stack.flat_grad)
    for k, model in enumerate(models):
        reference = model(input_ids=ids[k]).logits
        torch.testing.assert_close(logits[k], reference, atol=1e-5, rtol=0)
        torch.nn.functional.cross_entropy(reference.view(-1, 40), targets[k].view(-1)).backward()
        exported = dict(gradients.export(k).named_parameters())
        for name, param in model.named_parameters():
            torch.testing.assert_close(exported[name], param.grad, atol=1e-6, rtol=0, msg=name)


def test_export_gives_back_the_models_it_was_built_from():
    models = [build_model(Shape(32, 2, 2, 96, 40, 9), seed) for seed in (3, 4)]
    stack = StackedLlama.from_models(models)
    for k, model in enumerate(models):
        assert_same_params(stack.export(k), model, atol=0)


# -------------------------------------------------------------------------------- training


def test_run_stacked_equals_run_trial_one_by_one(tmp_path):
    configs = [config(seed=0, rare_freq=0.05), config(seed=1, rare_freq=0.2, lr=0.01),
               config(seed=2, rare_freq=0.1, weight_decay=0.1, schedule="wsd")]
    stacked, single, stacked_dirs, single_dirs = train_both(configs, tmp_path)
    for k in range(len(configs)):
        assert stacked[k].status == "ok" and len(stacked[k].curve) == 3
        assert_same_result(stacked[k], single[k])
        assert_same_params(LlamaForCausalLM.from_pretrained(stacked_dirs[k]),
                           LlamaForCausalLM.from_pretrained(single_dirs[k]))
    assert stacked[0].train_s == stacked[1].train_s  # one shared loop


def test_clipping_is_per_model(tmp_path):
    """Same seed and data: with clipping active the result differs from without, and each
    model matches its own run (a norm over all models would clip both or neither)."""
    configs = [config(seed=0, grad_clip=0.02), config(seed=0, grad_clip=0.0)]
    stacked, single, stacked_dirs, single_dirs = train_both(configs, tmp_path)
    for k in range(2):
        assert_same_result(stacked[k], single[k])
        assert_same_params(LlamaForCausalLM.from_pretrained(stacked_dirs[k]),
                           LlamaForCausalLM.from_pretrained(single_dirs[k]))
    assert abs(single[0].curve[-1].train_loss - single[1].curve[-1].train_loss) > 1e-3


def test_stopped_models_do_not_affect_the_others(tmp_path):
    configs = [
        config(seed=0),
        config(seed=1, lr=10.0, warmup_frac=0.0, grad_clip=0.0),  # blows up at step 2
        config(seed=2, fault="nan"),
        config(seed=3, fault="raise"),
        config(seed=4, rare_freq=0.2),
    ]
    stacked, single, stacked_dirs, single_dirs = train_both(configs, tmp_path)
    assert [r.status for r in stacked] == ["ok", "diverged", "diverged", "failed", "ok"]
    for k in range(len(configs)):
        assert_same_result(stacked[k], single[k])
    for k in (0, 4):
        assert_same_params(LlamaForCausalLM.from_pretrained(stacked_dirs[k]),
                           LlamaForCausalLM.from_pretrained(single_dirs[k]))
    assert not stacked_dirs[1].exists()  # only models that end ok are saved, as run_trial does


def test_single_and_stacked_loops_end_faulty_trials_alike():
    """One trial monitor judges both loops: a raised error, a NaN loss and a time limit end a
    model with the same status, error and counted steps, stacked or alone."""
    configs = [config(seed=0, fault="raise"), config(seed=1, fault="nan"),
               config(seed=2, max_wall_s=1e-9)]  # over its time limit at the first step
    expected = [("failed", "RuntimeError: injected fault (train.fault=raise)", 0),
                ("diverged", "training loss nan at step 1 (initial nan)", 1),
                ("failed", "TimeoutError: time limit train.max_wall_s=1e-09 s reached at step 1 of 47", 1)]
    stacked = run_stacked(configs, cpus=1)
    single = [run_trial(c, cpus=1) for c in configs]
    for results in (stacked, single):
        assert [(r.status, r.error, r.steps) for r in results] == expected
        assert all(r.accuracy == {} and r.loss == {} and r.curve == [] for r in results)
    for a, b in zip(stacked, single, strict=True):
        assert_same_result(a, b)


@pytest.mark.parametrize(("other", "key", "first", "second"), [
    (config(d_model=64), "shape.d_model", 32, 64),
    (config(tokens=3000), "steps (train.tokens or train.flops)", 47, 24),
    (config(batch_size=8, tokens=3000), "train.batch_size", 16, 8),  # same steps: 47
])
def test_configs_that_cannot_share_a_stack_are_refused(other, key, first, second):
    with pytest.raises(ValueError) as err:
        run_stacked([config(), config(seed=1), other])
    assert str(err.value) == (f"run_stacked: every config must have the same {key}; "
                              f"config 0 has {first}, config 2 has {second}")
