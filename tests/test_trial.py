"""The trial runner without Ray: tasks, mixture, model, FLOPs, training, evaluation, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optimix.core.config import MixtureConfig, ModelConfig
from optimix.core.flops import flops_breakdown
from optimix.core.space import build_space, load_space
from optimix.trial.mixture import assign, batches
from optimix.trial.model import build_model, shape_for
from optimix.trial.monitor import TrialMonitor
from optimix.trial.tasks import IGNORE, build_tasks, row_hash
from optimix.trial.train import eval_steps, lr_at, plan_trial, run_trial

from conftest import TASKS, tiny_space

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "search_spaces" / "quickstart.yaml"


def tiny_tree(**overrides) -> dict:
    """Every synthetic task, one model; a section in ``overrides`` replaces that section whole."""
    return {**tiny_space(tasks=dict.fromkeys(TASKS, {}), mixture={"rare_freq": 0.05}, model={"d_model": 32},
                         train={"tokens": 20_000, "threads": None}, search=None), **overrides}


def tiny_config(**overrides):
    return build_space(tiny_tree(**overrides)).base


# ----------------------------------------------------------------------------------- tasks


def test_same_seed_same_data_and_different_seed_different_data():
    a, b = build_tasks(tiny_config()), build_tasks(tiny_config())
    c = build_tasks(tiny_config(seed=1))
    for name in a.tasks:
        np.testing.assert_array_equal(a.tasks[name].eval_ids, b.tasks[name].eval_ids)
        got_a = a.tasks[name].sample(np.random.default_rng(5), 50)[0]
        got_b = b.tasks[name].sample(np.random.default_rng(5), 50)[0]
        np.testing.assert_array_equal(got_a, got_b)
    assert not np.array_equal(a.tasks["modadd"].eval_ids, c.tasks["modadd"].eval_ids)


@pytest.mark.parametrize("name", ["copy", "reverse", "sort", "modadd", "compare"])
def test_training_never_sees_a_held_out_input(name):
    taskset = build_tasks(tiny_config())
    task = taskset.tasks[name]
    prompt_end = int(np.argmax(task.eval_ids[0] == 1))  # SEP
    held = set(map(tuple, task.eval_ids[:, :prompt_end]))
    ids, _ = task.sample(np.random.default_rng(0), 20_000)
    seen = set(map(tuple, ids[:, :prompt_end]))
    assert held and not (held & seen)


@pytest.mark.parametrize("name", ["modadd", "compare"])
def test_unordered_heldout_keeps_both_orders_of_a_pair_out_of_training(name):
    def pairs(rows, v):
        return {(int(r[1] - v.symbol0), int(r[2] - v.symbol0)) for r in rows}

    counts = {}
    for mode in ("ordered", "unordered"):
        tree = tiny_tree(eval={"points": 1, "size": 1000})
        tree["tasks"][name].update(p=23, heldout=mode)
        taskset = build_tasks(build_space(tree).base)
        task, v = taskset.tasks[name], taskset.vocab
        held = pairs(task.eval_ids, v)
        seen = pairs(task.sample(np.random.default_rng(0), 50_000)[0], v)
        assert held and not (held & seen) and len(held) + len(seen) == 23 * 23
        assert len(held) - round(0.2 * 23 * 23) in (0, 1)  # a mirror may add one
        counts[mode] = sum((b, a) in seen for a, b in held)
    assert counts["ordered"] > 50  # most held-out pairs have their mirror trained
    assert counts["unordered"] == 0  # none does


def test_task_formats_are_what_the_docs_say():
    taskset = build_tasks(tiny_config())
    v = taskset.vocab
    for name, check in {
        "copy": lambda x, y: list(x) == list(y),
        "reverse": lambda x, y: list(x[::-1]) == list(y),
        "sort": lambda x, y: sorted(x) == list(y),
    }.items():
        ids, mask = taskset.tasks[name].sample(np.random.default_rng(1), 100)
        n = (ids.shape[1] - 2) // 2
        assert (ids[:, 0] == v.tag(name)).all() and (ids[:, n + 1] == 1).all()
        assert all(check(row[1:n + 1], row[n + 2:]) for row in ids)
        assert mask[:, n + 2:].all() and not mask[:, : n + 2].any()
    ids, _ = taskset.tasks["modadd"].sample(np.random.default_rng(2), 200)
    a, b, c = (ids[:, i] - v.symbol0 for i in (1, 2, 4))
    assert ((a + b) % 11 == c).all()
    ids, _ = taskset.tasks["compare"].sample(np.random.default_rng(2), 200)
    a, b, c = (ids[:, i] - v.symbol0 for i in (1, 2, 4))
    assert ((a < b) == c).all()


def test_background_facts_are_zipf_sampled():
    taskset = build_tasks(tiny_config())
    ids, _ = taskset.tasks["background"].sample(np.random.default_rng(0), 60_000)
    _, counts = np.unique(row_hash(ids[:, 1:4]), return_counts=True)
    counts = np.sort(counts)[::-1]
    # zipf 1: the most frequent fact is drawn about twice as often as the second.
    assert 1.6 < counts[0] / counts[1] < 2.5
    assert len(counts) > 250  # the tail is being sampled too


def test_fresh_background_values_leave_nothing_to_memorise():
    """``values: fresh``: the same keys at the same share, each sequence's value drawn afresh
    (a key's training values spread over the alphabet), scored on fixed values (chance)."""
    spec = {"kind": "facts", "n_facts": 20, "alphabet": 16, "value_len": 1}
    tree = tiny_tree()
    tree["tasks"]["background"] = {**spec, "values": "fresh"}
    fresh = build_tasks(build_space(tree).base).tasks["background"]
    tree["tasks"]["background"] = spec
    fixed = build_tasks(build_space(tree).base).tasks["background"]
    for task, per_key in ((fixed, 1), (fresh, 10)):
        ids, _ = task.sample(np.random.default_rng(0), 4000)
        keys, values = row_hash(ids[:, 1:4]), ids[:, -1]
        assert len(np.unique(keys)) == 20  # the same 20 keys either way
        spread = [len(np.unique(values[keys == k])) for k in np.unique(keys)]
        assert min(spread) >= per_key if per_key > 1 else max(spread) == 1, spread
    assert (fresh.eval_ids[:, 1:4] == fixed.eval_ids[:, 1:4]).all()


def test_dataset_task_from_local_json(tmp_path):
    rows = [{"q": f"{i}+{j}", "a": str(i + j)} for i in range(12) for j in range(12)]
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tree = tiny_tree()
    tree["tasks"]["sums"] = {"kind": "dataset", "path": str(path), "prompt_column": "q",
                             "answer_column": "a", "eval_fraction": 0.25}
    taskset = build_tasks(build_space(tree).base)
    task = taskset.tasks["sums"]
    assert taskset.vocab.size >= 3 + 8 + 16 + 11  # specials, tags, symbols, characters
    held = {tuple(r[: int(np.argmax(r == 1))]) for r in task.eval_ids}
    ids, mask = task.sample(np.random.default_rng(0), 2000)
    assert not held & {tuple(r[: int(np.argmax(r == 1))]) for r in ids}
    assert len(task.eval_ids) == 36 and mask.any(axis=1).all()


def test_tokenizer_round_trips_through_transformers():
    taskset = build_tasks(tiny_config())
    tok = taskset.vocab.to_hf_tokenizer()
    ids = taskset.tasks["reverse"].eval_ids[0]
    assert tok(taskset.vocab.decode(ids))["input_ids"] == list(ids)


# --------------------------------------------------------------------------------- mixture


@pytest.mark.parametrize("freq", [0.001, 0.013, 0.2, 0.5])
@pytest.mark.parametrize("delivery", ["even", "bursts"])
def test_rare_share_is_exact_in_the_long_run(freq, delivery):
    mixture = MixtureConfig(rare_task="r", rare_freq=freq, delivery=delivery,
                            burst_period=10, burst_duty=0.5)
    weights = np.array([1.0, 2.0, 1.0])
    n = 64 * 1000  # whole burst periods
    which = assign(0, n, mixture, 64, 1, weights, 0.37, np.random.default_rng(0))
    assert abs((which == 1).sum() - freq * n) <= 1
    # the other tasks split the rest 1:1 by weight, within sampling error
    rest = np.array([(which == 0).sum(), (which == 2).sum()])
    sigma = np.sqrt(rest.sum() * 0.25)
    assert abs(rest[0] - rest[1]) / 2 < 5 * sigma


def test_chunks_join_up_exactly():
    mixture = MixtureConfig(rare_task="r", rare_freq=0.013)
    w = np.ones(2)
    whole = assign(0, 5000, mixture, 8, 0, w, 0.5, np.random.default_rng(0)) == 0
    parts = [assign(s, 1000, mixture, 8, 0, w, 0.5, np.random.default_rng(s)) == 0
             for s in range(0, 5000, 1000)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_bursts_arrive_in_bursts_and_even_does_not():
    kw = dict(rare_task="r", rare_freq=0.05, burst_period=20, burst_duty=0.1)
    w = np.ones(2)
    per_step = {}
    for delivery in ("even", "bursts"):
        which = assign(0, 32 * 400, MixtureConfig(delivery=delivery, **kw), 32, 0, w, 0.0,
                       np.random.default_rng(0))
        per_step[delivery] = (which == 0).reshape(400, 32).sum(axis=1)
    assert per_step["even"].sum() == per_step["bursts"].sum()
    assert (per_step["even"] > 0).mean() > 0.7  # nearly every step has some
    bursts = per_step["bursts"].reshape(20, 20)
    assert (bursts[:, :2] > 0).all() and (bursts[:, 2:] == 0).all()  # 2 of every 20 steps


@pytest.mark.parametrize("second", [{"freq": 0.005}, {"freq": 0.01, "delivery": "bursts",
                                                     "burst_period": 10, "burst_duty": 0.2}])
def test_several_rare_tasks_each_get_their_exact_share(second):
    mixture = MixtureConfig(rare={"a": 0.02, "b": second})
    weights = np.ones(4)
    n = 64 * 1000
    which = assign(0, n, mixture, 64, [1, 3], weights, 0.37, np.random.default_rng(0))
    assert abs((which == 1).sum() - 0.02 * n) <= 2
    assert abs((which == 3).sum() - second["freq"] * n) <= 2
    assert {0, 2} <= set(np.unique(which).tolist())


def test_two_rare_tasks_through_batches_within_one_percent_over_1e5_sequences():
    """The issue's bar: realised shares within 1% of their targets over 10^5 sequences."""
    config = tiny_config(mixture={"rare": {"facts": 0.03, "reverse": {"freq": 0.01, "delivery": "bursts",
                                                                     "burst_period": 20, "burst_duty": 0.1}}})
    taskset = build_tasks(config)
    tags = {name: taskset.vocab.tag(name) for name in ("facts", "reverse")}
    seen = {name: 0 for name in tags}
    steps, batch = 1000, 100  # 10^5 sequences, in chunks that carry the counts over
    for ids, _ in batches(taskset, config.mixture, batch, steps, np.random.default_rng(0)):
        for name, tag in tags.items():
            seen[name] += int((ids[:, 0] == tag).sum())
    for name, target in (("facts", 0.03), ("reverse", 0.01)):
        assert abs(seen[name] / (steps * batch) - target) <= 0.01 * target, (name, seen)


@pytest.mark.parametrize(("mixture", "key"), [
    ({"rare": {"facts": 0.7, "reverse": 0.5}}, "mixture.rare"),
    ({"rare": {"facts": 0.02, "nope": 0.01}}, "mixture.rare.nope"),
    ({"rare": {"facts": 0.02}, "rare_task": "copy"}, "mixture.rare"),
    ({"rare": {"facts": {"freq": 0.07, "delivery": "bursts", "burst_duty": 0.1},
               "reverse": {"freq": 0.08, "delivery": "bursts", "burst_duty": 0.2}}}, "mixture.rare"),
    ({"rare": {"facts": {"freq": 0.2, "delivery": "bursts", "burst_duty": 0.1}}}, "mixture.rare.facts.burst_duty"),
])
def test_bad_rare_mixtures_name_their_key(mixture, key):
    from optimix.core.space import SpaceError

    with pytest.raises(SpaceError) as err:
        tiny_config(mixture=mixture)
    assert str(err.value).startswith(key), str(err.value)


def test_the_first_rare_task_is_the_primary_one():
    config = tiny_config(mixture={"rare": {"reverse": 0.02, "facts": 0.01}})
    assert config.mixture.rare_task == "reverse" and config.mixture.rare_freq == 0.02
    assert list(config.mixture.rare_specs()) == ["reverse", "facts"]


def test_batches_shape_and_targets_only_on_answers():
    config = tiny_config()
    taskset = build_tasks(config)
    ids, targets = next(batches(taskset, config.mixture, 32, 3, np.random.default_rng(0)))
    assert ids.shape == targets.shape == (32, taskset.seq_len)
    scored = targets != IGNORE
    np.testing.assert_array_equal(targets[:, :-1][scored[:, :-1]], ids[:, 1:][scored[:, :-1]])
    assert (scored.sum(axis=1) >= 1).all()


# ---------------------------------------------------------------------------- model, FLOPs


@pytest.mark.parametrize("params", [20_000, 70_000, 250_000, 650_000, 5_000_000])
def test_param_target_maps_to_a_close_shape(params):
    shape = shape_for(ModelConfig(params=params), n_vocab=150, n_ctx=8)
    model = build_model(shape, seed=0)
    total = sum(p.numel() for p in model.parameters())
    assert total == shape.params
    assert 0.6 < total / params < 1.6
    assert shape.d_model % shape.n_head == 0


@pytest.mark.parametrize("shape_kw", [
    dict(d_model=32, n_layer=2, n_head=2, n_ctx=8),
    dict(d_model=64, n_layer=3, n_head=4, n_ctx=32),
    dict(d_model=128, n_layer=2, n_head=4, n_ctx=128),
])
def test_flops_formula_matches_torch_flop_counter(shape_kw):
    """Counted by both: every matmul (q/k/v/o, MLP, lm head), QK^T and AV, forward and
    backward. Not counted by either: embedding lookup, norms, RoPE, softmax, activations."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaForCausalLM

    from optimix.trial.model import Shape, default_d_ff

    d = shape_kw["d_model"]
    shape = Shape(d, shape_kw["n_layer"], shape_kw["n_head"], default_d_ff(d), 150, shape_kw["n_ctx"])
    config = build_model(shape, seed=0).config
    config._attn_implementation = "eager"  # plain matmuls, which the counter sees
    # A new model of that config: transformers 4.45 picks a model's attention when it is made
    model = LlamaForCausalLM(config)
    x = torch.randint(0, 150, (4, shape.n_ctx))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=x).logits.float().sum().backward()
    measured = counter.get_total_flops() / x.numel()
    predicted = flops_breakdown(d, shape.n_layer, shape.d_ff, 150, shape.n_ctx).train
    assert abs(measured / predicted - 1) < 0.05, (measured, predicted)


def test_plan_counts_tokens_and_flops():
    config = tiny_config()
    plan = plan_trial(config)
    tokens_per_step = 32 * build_tasks(config).seq_len
    assert plan.tokens == plan.steps * tokens_per_step >= 20_000
    assert plan.train_flops == pytest.approx(plan.tokens * plan.shape.train_flops_per_token)
    iso = plan_trial(tiny_config(train={"flops": plan.train_flops, "batch_size": 32}))
    assert iso.steps == plan.steps


def test_lr_schedule_warms_up_then_decays():
    train = tiny_config().train
    lrs = [lr_at(s, 100, train) for s in range(1, 101)]
    assert lrs[0] < lrs[4] == pytest.approx(train.lr)
    assert lrs[-1] == pytest.approx(train.lr * train.min_lr_frac)
    assert all(a >= b for a, b in zip(lrs[5:], lrs[6:], strict=False))
    assert eval_steps(100, 4) == [25, 50, 75, 100]


# ------------------------------------------------------------------------------- training


def test_a_tiny_run_learns_a_frequent_task_and_is_deterministic():
    tree = tiny_tree(tasks={"copy": {"kind": "copy", "length": 3, "alphabet": 8},
                            "facts": {"kind": "facts", "n_facts": 20, "alphabet": 16}})
    tree["train"] = {"tokens": 150_000, "batch_size": 32, "lr": 0.01, "threads": 1}
    tree["model"] = {"d_model": 32, "n_layer": 2, "n_head": 2}
    config = build_space(tree).base
    first = run_trial(config)
    assert first.status == "ok", first.error
    assert first.accuracy["copy"] > 0.9  # chance is 8**-3
    assert first.wall_s < 60
    assert len(first.curve) == 2 and first.curve[-1].tokens == first.tokens
    again = run_trial(config)
    assert again.accuracy == first.accuracy and again.loss == first.loss


def test_divergence_ends_the_trial_without_a_score():
    config = tiny_config(train={"tokens": 20_000, "batch_size": 32, "lr": 10.0, "grad_clip": 0,
                                "warmup_frac": 0, "diverge_factor": 1.5})
    result = run_trial(config)
    assert result.status == "diverged"
    assert result.accuracy == {} and "loss" in result.error


@pytest.mark.parametrize(("losses", "status", "error"), [
    ([2.0, 7.9, 0.5], "ok", None),  # at most diverge_factor (4) x the first loss read
    ([2.0, 8.1], "diverged", "training loss 8.1 at step 2 (initial 2)"),
    ([2.0, math.inf], "diverged", "training loss inf at step 2 (initial 2)"),
    ([math.nan], "diverged", "training loss nan at step 1 (initial nan)"),
    ([1e-5, 0.0039], "ok", None),  # a first loss near 0 counts as 1e-3
    ([1e-5, 0.0041], "diverged", "training loss 0.0041 at step 2 (initial 1e-05)"),
])
def test_the_monitor_ends_a_diverging_trial_with_the_reason(losses, status, error):
    config = tiny_config(train={"tokens": 2_000_000, "batch_size": 32})  # evaluations far off
    plan = plan_trial(config)
    monitor = TrialMonitor([config], [build_tasks(config)], plan.shape, plan.steps)
    monitor.setup_device(cpus=1)
    monitor.start()
    for step, value in enumerate(losses, 1):
        stopped = monitor.after_step(step, torch.tensor(value), model_of=None)
    result = monitor.results[0]
    assert (result.status, result.error, stopped) == (status, error, [] if status == "ok" else [0])
    assert result.steps == len(losses) and result.tokens == len(losses) * plan.tokens // plan.steps


def test_a_crash_is_recorded_as_failed(tmp_path):
    config = tiny_config()
    (tmp_path / "file-in-the-way").write_text("")
    result = run_trial(config, save_dir=tmp_path / "file-in-the-way" / "x")
    assert result.status == "failed" and result.error and result.accuracy == {}


def test_saved_model_reloads_with_transformers(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_config()
    result = run_trial(config, save_dir=tmp_path / "model")
    assert result.status == "ok"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert sum(p.numel() for p in model.parameters()) == result.params
    assert tok.convert_tokens_to_ids("<t:facts>") == build_tasks(config).vocab.tag("facts")


def test_on_eval_can_stop_a_trial():
    seen = []
    result = run_trial(tiny_config(), on_eval=lambda p: seen.append(p) or True)
    assert result.status == "pruned" and len(seen) == 1 and result.accuracy == {}


# ------------------------------------------------------------------------------------- CLI


def test_train_json_contract(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "optimix.cli", "train", str(QUICKSTART), "--json",
         "--set", "train.tokens=20000", "--set", "eval.size=64", "--seed", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # exactly one JSON document on stdout
    for key in ("status", "params", "non_embedding_params", "tokens", "train_flops",
                "accuracy", "loss", "wall_s", "tokens_per_s"):
        assert key in doc
    assert doc["status"] == "ok" and doc["config"]["seed"] == 3
    assert set(doc["accuracy"]) == set(load_space(QUICKSTART).base.tasks)
    assert doc["tokens"] >= 20000 and doc["train_flops"] > 0 and doc["tokens_per_s"] > 0


def test_quickstart_dimension_defaults_are_what_train_uses():
    space = load_space(QUICKSTART)
    assert space.base.mixture.rare_freq == space.dimensions["mixture.rare_freq"].default
    assert space.resolve({"model.d_model": 128}).model.d_model == 128


def test_a_trial_over_its_time_limit_is_failed_with_the_reason():
    config = tiny_config(train={"tokens": 2_000_000, "batch_size": 32, "max_wall_s": 0.5})
    result = run_trial(config)
    assert result.status == "failed" and result.accuracy == {}
    assert "time limit train.max_wall_s=0.5" in result.error
    assert 0 < result.tokens < 2_000_000  # what it spent is still counted


def test_curve_tasks_evaluates_only_those_tasks_before_the_last_point():
    config = tiny_config(eval={"points": 3, "size": 64, "curve_tasks": ["facts"]})
    result = run_trial(config, cpus=1)
    assert result.status == "ok"
    assert [set(p.accuracy) for p in result.curve[:-1]] == [{"facts"}, {"facts"}]
    assert set(result.curve[-1].accuracy) == set(config.tasks) == set(result.accuracy)
