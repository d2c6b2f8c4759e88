"""Train K models of one shape together, as one set of stacked parameters.

Why: a model of a few million parameters cannot fill a GPU. One eager training step of such a
model is a few hundred small kernels whose launch and Python overhead dominate; the arithmetic
takes microseconds. Stacking K models of the same shape along a leading *model* dimension turns
each of those kernels into one kernel over all K models (``torch.bmm`` for the linear layers, one
``scaled_dot_product_attention`` over ``K * batch`` sequences, one cross entropy over K batches,
a handful of elementwise optimizer kernels over one ``[K, P]`` buffer), so a step of K models
costs about the overhead of a step of one.

Why it is the same as training the models one by one with ``optimix.trial.train.run_trial``:

- Data and init: model k is ``build_model(shape, seed_k)`` and reads
  ``batches(taskset_k, mixture_k, batch_size, steps, default_rng([seed_k, 1]))``, exactly
  what its own trial would build and read.
- Forward: ``StackedLlama.forward`` is transformers' Llama forward (``modeling_llama.py`` with
  the config ``optimix.trial.model.build_model`` sets) op for op, with a leading K axis: RMSNorm in
  fp32 with the config's eps, RoPE from the model's own ``inv_freq`` with the ``rotate_half``
  convention, causal SDPA with scale ``head_dim ** -0.5``, SwiGLU MLP, final norm, untied or
  tied ``lm_head``. Every op is a matmul batched over models, elementwise, or a reduction over
  one position's features or vocabulary, so model k's activations depend on model k's
  parameters and inputs only (attention runs on ``[K * B, H, T, D]``: each row is one sequence).
- Loss and gradient: each model's loss is the mean cross entropy over its own answer tokens, as
  in ``run_trial``. The sum over models is back-propagated; ``d sum / d loss_k = 1``, so each
  model's gradient is its own. The embedding's ``padding_idx`` (no gradient reaches the pad
  row from the lookup) is kept by detaching the looked-up vectors at pad positions.
- Clipping is per model, as ``clip_grad_norm_`` does for one model: model k's global norm is
  the 2-norm of its row of the gradient buffer, and its row is scaled by
  ``min(1, clip_k / (norm_k + 1e-6))``.
- AdamW is elementwise, so one update over the ``[K, P]`` buffer is K independent updates.
  ``StackedAdamW`` does torch's single-tensor AdamW op for op, with every hyperparameter a
  per-model column (``torch.optim.AdamW`` takes one learning rate per parameter group, so the
  learning rate could not differ between models).
- Divergence, faults and time limits are judged per model by ``run_trial``'s trial monitor
  (``optimix.trial.monitor``), with its rules and check steps. A model that stops is frozen: its parameters and optimizer state are zeroed and its
  gradient scaled by 0, so it contributes finite zeros from then on and the others never see it.
- Evaluation: model k is copied into a transformers ``LlamaForCausalLM`` and scored by
  ``optimix.trial.evaluate.evaluate``: the same function on the same weights as its own trial.

On CPU in fp32 the results agree with one-by-one training up to float rounding (a batched
matmul or a norm over one buffer may sum in another order than the per-model kernels). On CUDA
``run_trial`` uses a fused AdamW kernel and both use bf16 autocast, so they agree within bf16
tolerance.

Parameter layout: all parameters of model k are one contiguous row of ``StackedLlama.flat``
(``[K, P]``); each ``nn.Parameter`` is a ``[K, ...]`` view into it, and its ``.grad`` a view
into ``flat_grad``, into which autograd accumulates in place. Per-model norms, the optimizer
and freezing are then a few kernels over two buffers, whatever the number of tensors.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from optimix.core.config import TrainConfig, TrialConfig
from optimix.trial.mixture import batches
from optimix.trial.model import Shape, build_model
from optimix.trial.monitor import TrialMonitor, TrialResult
from optimix.trial.tasks import IGNORE, TaskSet, cached_tasks
from optimix.trial.train import Plan, lr_at, plan_trial, save_model

ADAM_EPS = 1e-8  # torch.optim.AdamW's default, which run_trial uses
CLIP_EPS = 1e-6  # clip_grad_norm_'s: clip_k / (norm_k + 1e-6)


class StackedLlama(nn.Module):
    """K transformers Llama causal LMs of one config, as ``[K, ...]`` parameters.

    ``forward(ids [K, B, T]) -> logits [K, B, T, V]``. Build it with ``from_models`` and get
    model k back with ``export(k)``. It lives on the device it was built on: moving it with
    ``.to()`` would break the views into ``flat``. Gradients accumulate into ``flat_grad``;
    run backward under ``torch.autograd.enforce_grad_layout_policy(False)``, or autograd warns
    once that these strided gradients break its layout contract (harmless).
    """

    def __init__(self, config: LlamaConfig, k: int, device: torch.device | str = "cpu"):
        super().__init__()
        _check_supported(config)
        self.config = copy.deepcopy(config)
        self.k = k
        d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
        self.d_model, self.d_ff, self.n_vocab = d, f, v
        self.n_layer = config.num_hidden_layers
        self.n_head = config.num_attention_heads
        self.tied = config.tie_word_embeddings
        self.head_dim = d // self.n_head
        self.scaling = self.head_dim**-0.5
        self.eps = config.rms_norm_eps
        self.padding_idx = config.pad_token_id
        # (parameter, its per-model shape, the HF state-dict keys concatenated along its dim 0)
        layout: list[tuple[str, tuple[int, ...], tuple[str, ...]]] = [
            ("embed", (v, d), ("model.embed_tokens.weight",))]
        for i in range(config.num_hidden_layers):
            pre = f"model.layers.{i}."
            layout += [
                (f"ln1.{i}", (d,), (pre + "input_layernorm.weight",)),
                (f"qkv.{i}", (3 * d, d), tuple(f"{pre}self_attn.{n}_proj.weight" for n in "qkv")),
                (f"o.{i}", (d, d), (pre + "self_attn.o_proj.weight",)),
                (f"ln2.{i}", (d,), (pre + "post_attention_layernorm.weight",)),
                (f"gate_up.{i}", (2 * f, d), (pre + "mlp.gate_proj.weight", pre + "mlp.up_proj.weight")),
                (f"down.{i}", (d, f), (pre + "mlp.down_proj.weight",)),
            ]
        layout.append(("norm", (d,), ("model.norm.weight",)))
        if not self.tied:
            layout.append(("lm_head", (v, d), ("lm_head.weight",)))
        sizes = [math.prod(shape) for _, shape, _ in layout]
        self.flat = torch.zeros(k, sum(sizes), device=device)
        self.flat_grad = torch.zeros_like(self.flat)
        for name in ("ln1", "qkv", "o", "ln2", "gate_up", "down"):
            setattr(self, name, nn.ParameterList())
        self.slots: list[tuple[nn.Parameter, tuple[str, ...]]] = []
        offset = 0
        for (name, shape, keys), size in zip(layout, sizes, strict=True):
            param = nn.Parameter(self.flat[:, offset:offset + size].view(k, *shape))
            param.grad = self.flat_grad[:, offset:offset + size].view(k, *shape)
            offset += size
            if "." in name:
                getattr(self, name.split(".")[0]).append(param)
            else:
                setattr(self, name, param)
            self.slots.append((param, keys))
        self.register_buffer("inv_freq", _inv_freq(self.config).to(device), persistent=False)
        self.register_buffer("row_offsets", torch.arange(k, device=device) * v, persistent=False)

    @classmethod
    def from_models(cls, models: Sequence[LlamaForCausalLM],
                    device: torch.device | str | None = None) -> StackedLlama:
        """Stack the weights of ``models`` (one config); on ``device``, default the first model's."""
        if not models:
            raise ValueError("from_models: no models")
        config = models[0].config
        for i, model in enumerate(models[1:], 1):
            if model.config.to_dict() != config.to_dict():
                raise ValueError(f"from_models: model {i}'s config differs from model 0's")
        stack = cls(config, len(models), device or models[0].device)
        with torch.no_grad():
            for k, model in enumerate(models):
                state = model.state_dict()
                for param, keys in stack.slots:
                    param[k].copy_(torch.cat([state[key] for key in keys]))
        return stack

    def export(self, k: int, into: LlamaForCausalLM | None = None) -> LlamaForCausalLM:
        """Model k as a transformers ``LlamaForCausalLM`` (a copy); ``into`` reuses a model."""
        model = into
        if model is None:
            model = LlamaForCausalLM(copy.deepcopy(self.config)).to(self.flat.device)
        target = model.state_dict()  # tensors sharing the model's storage
        with torch.no_grad():
            for param, keys in self.slots:
                pieces = param[k].split([target[key].shape[0] for key in keys])
                for key, piece in zip(keys, pieces, strict=True):
                    target[key].copy_(piece)
        return model

    def freeze(self, k: int) -> None:
        """Zero model k's parameters and gradient (an optimizer's state is its own to zero)."""
        with torch.no_grad():
            self.flat[k].zero_()
            self.flat_grad[k].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        k, b, t = ids.shape
        d, v, n_head, head_dim = self.d_model, self.n_vocab, self.n_head, self.head_dim
        x = F.embedding(ids + self.row_offsets.view(k, 1, 1), self.embed.reshape(k * v, d))
        if self.padding_idx is not None:  # nn.Embedding(padding_idx): no gradient to the pad row
            x = torch.where((ids == self.padding_idx)[..., None], x.detach(), x)
        x = x.view(k, b * t, d)
        # LlamaRotaryEmbedding: fp32 angles, cat((f, f)), cast to the hidden states' dtype
        freqs = torch.arange(t, device=ids.device, dtype=torch.float32)[:, None] * self.inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)

        def heads(part: torch.Tensor) -> torch.Tensor:  # [K, B*T, D] -> [K*B, H, T, head_dim]
            part = part.view(k, b, t, n_head, head_dim).transpose(2, 3)
            return part.reshape(k * b, n_head, t, head_dim)

        for i in range(self.n_layer):
            h = _rms_norm(x, self.ln1[i], self.eps)
            qkv = torch.bmm(h, self.qkv[i].transpose(1, 2))
            q, key, value = (heads(part) for part in qkv.split(d, dim=-1))
            q = q * cos + _rotate_half(q) * sin
            key = key * cos + _rotate_half(key) * sin
            att = F.scaled_dot_product_attention(q, key, value, is_causal=True, scale=self.scaling)
            att = att.transpose(1, 2).reshape(k, b * t, d)
            x = x + torch.bmm(att, self.o[i].transpose(1, 2))
            h = _rms_norm(x, self.ln2[i], self.eps)
            gate, up = torch.bmm(h, self.gate_up[i].transpose(1, 2)).split(self.d_ff, dim=-1)
            x = x + torch.bmm(F.silu(gate) * up, self.down[i].transpose(1, 2))
        x = _rms_norm(x, self.norm, self.eps)
        head = self.embed if self.tied else self.lm_head
        return torch.bmm(x, head.transpose(1, 2)).view(k, b, t, v)


def _check_supported(config: LlamaConfig) -> None:
    """The Llama features ``StackedLlama`` implements; anything else is refused, not ignored."""
    rope = _rope(config).get("rope_type", "default")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    problems = [
        what for what, bad in [
            (f"hidden_act={config.hidden_act!r} (silu only)", config.hidden_act != "silu"),
            ("attention_bias", config.attention_bias),
            ("mlp_bias", config.mlp_bias),
            ("grouped KV heads", config.num_key_value_heads != config.num_attention_heads),
            (f"rope_type={rope!r} (default only)", rope != "default"),
            ("head_dim != hidden_size / num_attention_heads",
             head_dim * config.num_attention_heads != config.hidden_size),
            ("attention_dropout", config.attention_dropout != 0),
        ] if bad
    ]
    if problems:
        raise ValueError(f"StackedLlama does not support: {', '.join(problems)}")


def _rope(config: LlamaConfig) -> dict:
    """The config's RoPE settings: transformers 5's ``rope_parameters`` (with ``rope_theta``
    inside); before it, ``rope_scaling`` (None for the default RoPE) beside ``rope_theta``."""
    if hasattr(config, "rope_parameters"):
        return dict(config.rope_parameters or {})
    return {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta}


def _inv_freq(config: LlamaConfig) -> torch.Tensor:
    """RoPE inverse frequencies, as ``LlamaRotaryEmbedding.compute_default_rope_parameters``."""
    base = _rope(config)["rope_theta"]
    dim = config.hidden_size // config.num_attention_heads
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``LlamaRMSNorm`` with a weight per model: x ``[K, N, D]``, weight ``[K, D]``."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight[:, None, :] * h.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def per_model_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[K]`` mean cross entropy of each model over its own scored tokens (``run_trial``'s loss)."""
    k, v = logits.shape[0], logits.shape[-1]
    token_loss = F.cross_entropy(logits.float().reshape(-1, v), targets.reshape(-1),
                                 ignore_index=IGNORE, reduction="none")
    return token_loss.view(k, -1).sum(1) / (targets != IGNORE).view(k, -1).sum(1)


class StackedAdamW:
    """AdamW with per-model clipping over a ``StackedLlama``'s ``[K, P]`` buffers.

    Op for op torch's single-tensor AdamW (``torch/optim/adam.py``, decoupled weight decay, no
    amsgrad), with each model's learning rate, betas and weight decay as a ``[K, 1]`` column.
    The step-dependent scalars (decay factor, step size, bias correction) are computed once for
    every step in Python floats, as torch computes them, and kept on the device as a
    ``[steps, K, 3]`` table: a step then needs no host-to-device transfer.
    """

    def __init__(self, stack: StackedLlama, trains: Sequence[TrainConfig], steps: int):
        device = stack.flat.device
        self.params, self.grads = stack.flat, stack.flat_grad
        self.exp_avg = torch.zeros_like(self.params)
        self.exp_avg_sq = torch.zeros_like(self.params)
        table = []
        for step in range(1, steps + 1):
            row = []
            for train in trains:
                lr = lr_at(step, steps, train)
                row.append((1 - lr * train.weight_decay, -(lr / (1 - train.beta1**step)),
                            (1 - train.beta2**step) ** 0.5))
            table.append(row)
        self.schedule = torch.tensor(table, dtype=torch.float32, device=device)

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)[:, None]

        self.one_minus_beta1 = column([1 - t.beta1 for t in trains])
        self.beta2 = column([t.beta2 for t in trains])
        self.one_minus_beta2 = column([1 - t.beta2 for t in trains])
        self.max_norm = torch.tensor([t.grad_clip for t in trains], dtype=torch.float32, device=device)

    @torch.no_grad()
    def step(self, step: int, active: torch.Tensor) -> None:
        """Clip each model's gradient, update, zero the gradients. ``active``: ``[K]`` bool."""
        norm = torch.linalg.vector_norm(self.grads, dim=1)
        coef = (self.max_norm * (norm + CLIP_EPS).reciprocal()).clamp(max=1.0)  # clip_grad_norm_'s
        coef = torch.where(self.max_norm > 0, coef, 1.0)  # grad_clip = 0: no clipping
        coef = torch.where(active, coef, 0.0)
        grad = self.grads.mul_(coef[:, None])
        decay, neg_step_size, bias_correction2_sqrt = self.schedule[step - 1, :, :, None].unbind(1)
        self.params.mul_(decay)
        self.exp_avg.lerp_(grad, self.one_minus_beta1)
        self.exp_avg_sq.mul_(self.beta2).add_(self.one_minus_beta2 * grad * grad)  # addcmul_
        denom = (self.exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
        self.params.add_(neg_step_size * self.exp_avg / denom)  # addcdiv_(value=-step_size)
        self.grads.zero_()

    @torch.no_grad()
    def freeze(self, k: int) -> None:
        """Zero model k's moments (with zero parameters and gradient, its updates are 0)."""
        self.exp_avg[k].zero_()
        self.exp_avg_sq[k].zero_()


# ---------------------------------------------------------------------------------------------
# The training loop


def _quiet_grad_layout():
    """``torch.autograd.enforce_grad_layout_policy(False)`` where torch has it (2.13 on); on
    older torch autograd adds into the strided gradient views all the same, silently."""
    import contextlib

    policy = getattr(torch.autograd, "enforce_grad_layout_policy", None)
    return policy(False) if policy is not None else contextlib.nullcontext()


def check_stackable(configs: Sequence[TrialConfig], plans: Sequence[Plan]) -> None:
    """``ValueError`` naming the first setting that must be shared but differs between configs."""
    first, first_plan = configs[0], plans[0]
    for i, (config, plan) in enumerate(zip(configs, plans, strict=True)):
        pairs = {f"shape.{f.name}": (getattr(first_plan.shape, f.name), getattr(plan.shape, f.name))
                 for f in fields(Shape)}
        pairs["steps (train.tokens or train.flops)"] = (first_plan.steps, plan.steps)
        for key in TrainConfig.model_fields:  # the loop's own settings, shared by every model
            meaning = TrialConfig.meaning(f"train.{key}")
            if not (meaning.per_model or meaning.length):
                pairs[f"train.{key}"] = (getattr(first.train, key), getattr(config.train, key))
        for key, (a, b) in pairs.items():
            if a != b:
                raise ValueError(f"run_stacked: every config must have the same {key}; "
                                 f"config 0 has {a!r}, config {i} has {b!r}")


def run_stacked(configs: Sequence[TrialConfig], *, taskset: TaskSet | None = None,
                cpus: float | None = None,
                save_dirs: Sequence[str | Path] | None = None) -> list[TrialResult]:
    """Train and evaluate ``configs`` together; one ``TrialResult`` each, as ``run_trial`` gives.

    The configs must share the model shape, steps, batch size, device, compile and threads
    (``ValueError`` otherwise). Per model may differ: seed, tasks (same vocabulary size and
    sequence length), mixture, the optimizer and schedule settings (lr, betas, weight decay,
    warmup, schedule, min lr, grad clip), diverge_factor, max_wall_s, fault and eval settings.
    ``taskset``, when given, is every model's (as it would be each ``run_trial``'s).
    ``save_dirs``, one per config, saves each model that ends ``ok`` as ``run_trial``'s
    ``save_dir`` does.
    Never raises for a failing trial: an error in the shared loop fails every model still
    training; ``train_s`` is the shared loop's time.
    """
    started = time.perf_counter()
    if not configs:
        raise ValueError("run_stacked: no configs")
    if save_dirs is not None and len(save_dirs) != len(configs):
        raise ValueError(f"run_stacked: {len(save_dirs)} save_dirs for {len(configs)} configs")
    tasksets = [taskset or cached_tasks(config) for config in configs]
    plans = [plan_trial(config, ts) for config, ts in zip(configs, tasksets, strict=True)]
    check_stackable(configs, plans)
    monitor = TrialMonitor(configs, tasksets, plans[0].shape, plans[0].steps, started=started)
    return monitor.run(lambda: _train_stacked(monitor, cpus, save_dirs))


def _train_stacked(monitor: TrialMonitor, cpus: float | None,
                   save_dirs: Sequence[str | Path] | None) -> None:
    """``optimix.trial.train._train`` for K models at once; the monitor keeps their results."""
    configs, tasksets, steps = monitor.configs, monitor.tasksets, monitor.steps
    train = configs[0].train
    device = monitor.setup_device(cpus)
    stack = StackedLlama.from_models([build_model(monitor.shape, c.seed) for c in configs], device)
    forward = monitor.compile(stack)
    optimizer = StackedAdamW(stack, [config.train for config in configs], steps)
    streams = [batches(ts, c.mixture, train.batch_size, steps, np.random.default_rng([c.seed, 1]))
               for c, ts in zip(configs, tasksets, strict=True)]
    active = torch.ones(len(configs), dtype=torch.bool, device=device)
    batch: list[tuple[np.ndarray, np.ndarray]] = [()] * len(configs)  # type: ignore[list-item]
    scratch: LlamaForCausalLM | None = None  # the HF model that evaluations load into

    def export(k: int) -> LlamaForCausalLM:
        nonlocal scratch
        scratch = stack.export(k, into=scratch)
        return scratch

    autocast = monitor.autocast
    stack.train()
    monitor.start()
    for step in range(1, steps + 1):
        for k in monitor.live:  # a stopped model keeps its last batch: its rows compute zeros
            batch[k] = next(streams[k])
        x = torch.from_numpy(np.stack([ids for ids, _ in batch])).to(device, non_blocking=True)
        y = torch.from_numpy(np.stack([targets for _, targets in batch])).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = forward(x)
        losses = monitor.inject_faults(step, per_model_loss(logits, y))
        # The grads are strided views into flat_grad: autograd adds into them in place, and
        # would warn once that they break its layout contract.
        with _quiet_grad_layout():
            losses.sum().backward()
        optimizer.step(step, active)
        for k in monitor.after_step(step, losses, export):  # frozen only now: backward has run
            active[k] = False
            stack.freeze(k)
            optimizer.freeze(k)
        if monitor.done:
            break
    for k, path in enumerate(save_dirs or []):
        if monitor.active[k]:
            save_model(stack.export(k), tasksets[k], path)
