"""Typed configs: everything one trial is, field by field, and the one error bad input raises.

Field names are the dotted keys of the search-space YAML, of ``--set`` and of the MLflow
params (``model.d_model``). A config is validated once, when it is built; a problem becomes a
``SpaceError`` whose message is one line naming the dotted key (``validated``). Pydantic and
the standard library only, with ``config_base`` (the errors, the section base) and
``task_specs`` (the task kinds); ``optimix.core.space`` reads the files that fill it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optimix.core.config_base import (
    AS_SHAPE,
    BURSTS_ONLY,
    LENGTH,
    NOT_TRAINED,
    PER_MODEL,
    RESUMABLE,
    FieldMeaning,
    field_meaning,
)
from optimix.core.config_base import KeyedError as KeyedError  # re-exported: one import for callers
from optimix.core.config_base import SpaceError as SpaceError
from optimix.core.config_base import StrictModel as StrictModel
from optimix.core.task_specs import _TASK_KINDS
from optimix.core.task_specs import ArithmeticTask as ArithmeticTask
from optimix.core.task_specs import DatasetTask as DatasetTask
from optimix.core.task_specs import FactsTask as FactsTask
from optimix.core.task_specs import SequenceTask as SequenceTask
from optimix.core.task_specs import TaskSpec as TaskSpec

# ---------------------------------------------------------------------------------------------
# The typed trial config. Field names are the dotted keys of YAML, --set and MLflow params.


MAX_TASK_NAME = 64


class RareSpec(StrictModel):
    """One rare task's share and delivery (an entry of ``mixture.rare``)."""

    freq: float
    delivery: Literal["even", "bursts"] = "even"
    burst_period: int = Field(100, ge=2)
    burst_duty: float = Field(0.1, gt=0, le=1)

    @field_validator("freq")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"a share is in (0, 1], got {value}")
        return value


class MixtureConfig(StrictModel):
    """How training sequences are drawn from the tasks: one rare task (``rare_task``,
    ``rare_freq``) or several (``rare: {facts: 0.02, rev: {freq: 0.01, delivery: bursts}}``,
    shares fixed or searched; the first is the primary one, which ``rare_task`` / ``rare_freq``
    then name). The other tasks share what is left by their weights."""

    rare_task: str | None = None
    """Name of the task whose frequency is searched."""
    rare_freq: float = Field(0.01, gt=0, le=1)
    """Exact expected share of training sequences that belong to the rare task."""
    rare: dict[str, float | RareSpec] | None = None
    """Several rare tasks: name -> share, or name -> ``{freq, delivery, burst_period, burst_duty}``."""
    delivery: Literal["even", "bursts"] = "even"
    """``even``: spread uniformly; ``bursts``: same long-run share, packed into bursts."""
    burst_period: int = Field(100, ge=2, json_schema_extra=BURSTS_ONLY)
    """Steps between the starts of two bursts."""
    burst_duty: float = Field(0.1, gt=0, le=1, json_schema_extra=BURSTS_ONLY)
    """Fraction of each period that carries the burst."""
    weights: dict[str, float] | None = None  # the other tasks' weights (``dist: simplex`` searches them)

    @model_validator(mode="before")
    @classmethod
    def _rare_entries(cls, data: Any) -> Any:
        """An entry of ``mixture.rare`` is a share or a mapping: its error names its own key
        (``rare.facts.freq``), not the first form pydantic tried (``rare.facts.float``)."""
        rare = data.get("rare") if isinstance(data, Mapping) else None
        for name, entry in rare.items() if isinstance(rare, Mapping) else ():
            if isinstance(entry, Mapping):
                try:
                    RareSpec.model_validate(entry)
                except ValidationError as err:
                    key, _, message = str(_one_line_error(err, f"rare.{name}.")).partition(": ")
                    raise KeyedError(key, message) from None
            elif isinstance(entry, bool) or not isinstance(entry, int | float):
                raise KeyedError(f"rare.{name}", "a share in (0, 1], or {freq, delivery, burst_period, "
                                 f"burst_duty}}, got {short_repr(entry)}")
        return data

    @model_validator(mode="after")
    def _one_form(self) -> MixtureConfig:
        if self.rare is None:
            if self.rare_task is None:
                raise KeyedError("rare_task", "missing (or mixture.rare, for several rare tasks)")
            return self
        if not self.rare:
            raise KeyedError("rare", "name at least one rare task")
        for name, entry in self.rare.items():
            if isinstance(entry, float | int) and not 0 < entry <= 1:
                raise KeyedError(f"rare.{name}", f"a share is in (0, 1], got {entry}")
        name, first = next(iter(self.rare_specs().items()))  # the primary: rare_task / rare_freq
        if (self.rare_task not in (None, name)
                or ("rare_freq" in self.model_fields_set and self.rare_freq != first.freq)):
            raise KeyedError("rare", "give mixture.rare or mixture.rare_task/rare_freq, not both")
        self.rare_task, self.rare_freq = name, first.freq
        return self

    def rare_specs(self) -> dict[str, RareSpec]:
        """Every rare task's share and delivery, in order (one entry for the single-task form)."""
        if self.rare is None:
            return {self.rare_task: RareSpec(freq=self.rare_freq, **self.model_dump(
                include={"delivery", "burst_period", "burst_duty"}))}
        return {name: entry if isinstance(entry, RareSpec) else RareSpec(freq=float(entry), **self.model_dump(
            include={"delivery", "burst_period", "burst_duty"})) for name, entry in self.rare.items()}


class ModelConfig(StrictModel):
    """A Llama-family causal LM. Give a shape, or ``params`` and let ``model.shape_for`` pick it."""

    d_model: int = Field(64, ge=8, le=16384)
    n_layer: int = Field(2, ge=1, le=256)
    n_head: int = Field(4, ge=1, le=256)
    d_ff: int | None = Field(None, ge=8)
    """MLP width; default: 8/3 d_model rounded up to a multiple of 16 (SwiGLU, as Llama)."""
    params: int | None = Field(None, ge=1000)
    """Target total parameter count; when set, the shape fields are derived from it."""
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.params is None and self.d_model % self.n_head:
            raise KeyedError("n_head", f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        return self


class TrainConfig(StrictModel):
    """One plain training loop: AdamW, warmup then cosine or WSD, grad clipping."""

    tokens: int | None = Field(None, ge=1, json_schema_extra=LENGTH)
    """Training tokens (batch x sequence positions x steps); or give ``flops``."""
    flops: float | None = Field(None, gt=0, json_schema_extra=LENGTH)
    """Training FLOPs; tokens are derived from the model's FLOPs per token (iso-FLOP trials)."""
    batch_size: int = Field(64, ge=1, le=1 << 16)
    lr: float = Field(3e-3, gt=0, le=10, json_schema_extra=PER_MODEL)
    beta1: float = Field(0.9, ge=0, lt=1, json_schema_extra=PER_MODEL)
    beta2: float = Field(0.98, ge=0, lt=1, json_schema_extra=PER_MODEL)
    weight_decay: float = Field(0.0, ge=0, json_schema_extra=PER_MODEL)
    warmup_frac: float = Field(0.05, ge=0, lt=1, json_schema_extra=PER_MODEL)
    schedule: Literal["cosine", "wsd"] = Field("cosine", json_schema_extra=PER_MODEL)
    min_lr_frac: float = Field(0.1, ge=0, le=1, json_schema_extra=PER_MODEL)
    grad_clip: float = Field(1.0, ge=0, json_schema_extra=PER_MODEL)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    """``torch.compile`` the model (CUDA only; ignored on CPU)."""
    threads: int | None = Field(None, ge=1)
    """Torch intra-op threads; default: the CPUs given to the trial."""
    diverge_factor: float = Field(4.0, gt=1, json_schema_extra=PER_MODEL)
    """Loss above this multiple of the initial loss (or NaN) ends the trial as diverged."""
    max_wall_s: float | None = Field(None, gt=0, json_schema_extra=PER_MODEL)
    """A time limit: a trial still training after this many seconds ends as failed."""
    fault: Literal["none", "raise", "nan", "exit"] = Field("none", json_schema_extra=PER_MODEL)
    """Fault injection, to see how a search handles failing trials: ``raise`` an error,
    turn the loss ``nan``, or ``exit`` the worker process, at the first training step."""

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if (self.tokens is None) == (self.flops is None):
            raise KeyedError("tokens", "give exactly one of train.tokens or train.flops")
        return self


class EvalConfig(StrictModel):
    points: int = Field(4, ge=1, le=1000)
    """Evaluations spread evenly over training (the learning curve); the last is the final one."""
    size: int = Field(512, ge=1, le=1_000_000)
    """Evaluation sequences per task: inputs held out of training, or for ``facts``
    a uniform sample of the trained facts (memorisation)."""
    batch_size: int = Field(1024, ge=1)
    curve_tasks: list[str] | None = None
    """Tasks evaluated at the curve points before the last (default: every task; the last
    point evaluates every task). The objectives' tasks are enough for the frontier and for
    pruning, and skip most of the evaluation cost."""


class Objective(StrictModel):
    """What a search optimises: a metric and its direction (``acc/facts:max``), parsed once
    from ``search.objectives`` (``metrics.SearchSpec``) and carried as this type."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    mode: Literal["min", "max"]

    @property
    def maximize(self) -> bool:
        return self.mode == "max"

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"


class ReplicatesConfig(StrictModel):
    """Retraining frontier configs at new seeds (``optimix.core.replicates``): a config on the
    frontier is confirmed once ``seeds`` seeds trained it; replicates count as trials and are
    charged like any, at most ``max_share`` of the search (of ``budget_flops``, else of ``trials``)."""

    seeds: int = Field(3, ge=2, le=64)
    max_share: float = Field(0.3, gt=0, le=1)


class SearchConfig(StrictModel):
    """How ``optimix search`` explores the space. Its entries cannot be search dimensions."""

    objectives: list[str] = Field(default_factory=list)
    """``metric:max|min`` pairs, e.g. ``[acc/facts:max, train_flops:min]``;
    default: the rare task's accuracy (max) and training FLOPs (min)."""
    constraints: list[str] = Field(default_factory=list)
    """Outcome constraints (``["acc/background >= 0.2"]``; ``>=``, ``>``, ``<=``, ``<``): told to
    the samplers; a trial that misses one is tagged so and never on the frontier."""
    sampler: Literal["auto", "frontier", "tpe", "gp", "nsga2", "random", "grid"] = "auto"
    """``auto``: ``frontier`` (``optimix.search.frontier_sampler``: the most expected frontier
    gain per FLOP) when the objectives are one quality metric and ``train_flops:min``, at any
    size; else ``gp`` (up to 3 objectives and 100 expected trials), ``tpe`` past that."""
    trials: int = Field(16, ge=1, le=1_000_000, json_schema_extra=RESUMABLE)
    budget_flops: float | None = Field(None, gt=0, json_schema_extra=RESUMABLE)
    max_concurrent: int = Field(2, ge=1, json_schema_extra=RESUMABLE)
    cpus_per_trial: float = Field(1.0, gt=0, le=4096, json_schema_extra=RESUMABLE)
    gpus_per_trial: float = Field(0.0, ge=0, le=64, json_schema_extra=RESUMABLE)
    """Per trial (Ray's resources); more than any one node has is refused when the search
    starts (no trial could ever be placed), and these bounds are beyond any machine."""
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    save_models: Literal["frontier", "all", "none"] = "none"
    stack: int = Field(1, ge=1, le=256)
    """Models trained together in one trial slot (``optimix.trial.stacked``): up to this many proposals
    that differ only in per-model settings (seed, mixture, optimiser) train as one stacked model
    in one process, far faster on a GPU. Each stays its own trial in Optuna, MLflow, the ledger."""
    startup_trials: int | None = Field(None, ge=1)
    """Space-filling first points before the sampler's model takes over (tpe, gp); default: a quarter of
    the trials the budget is expected to buy (``optimix plan SPACE``), between 3 and 10."""
    curve_candidates: bool = True
    """Learning-curve points count as frontier candidates (see ``optimix.core.frontier``)."""
    prune: Literal["none", "dominated"] = "none"
    """``dominated``: stop a trial whose curve point is beaten at no more FLOPs by the
    current frontier by more than ``prune_margin``; it ends ``pruned`` (told to Optuna so)."""
    prune_margin: float = Field(0.05, ge=0)
    prune_from: float = Field(0.5, gt=0, le=1)
    """Pruning is considered only at curve points at least this far through training."""
    replicates: ReplicatesConfig | Literal["auto", "off"] = Field("auto", json_schema_extra=RESUMABLE)
    """``auto``: ``{seeds: 3, max_share: 0.3}`` where the search has a FLOPs budget or more than
    6 trials, else off; ``off``: one seed per config (the frontier's values are single draws)."""
    patience: int | None = Field(None, ge=1, json_schema_extra=RESUMABLE)

    @field_validator("replicates", mode="before")
    @classmethod
    def _replicates_word(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML reads off/on as booleans
            return "auto" if value else "off"
        if not isinstance(value, (str, Mapping, ReplicatesConfig)) or (
                isinstance(value, str) and value not in ("auto", "off")):
            raise ValueError(f"expected auto, off or {{seeds: K, max_share: S}}, got {value!r}")
        return value
    """Stop proposing once this many finished trials in a row have not moved the frontier (no
    candidate of theirs changed it; a failed trial never does): running trials still finish.
    Counted over the search's ledger, so across ``--resume`` too. Default: no such stop."""


class HardwareSection(StrictModel):
    """A cost profile for ``optimix plan`` (see ``optimix.core.hardware`` for the built-in ones)."""

    name: str = Field("space", min_length=1)
    peak_flops_per_s: float = Field(gt=0)
    mfu: float = Field(gt=0, le=1)
    """Achieved share of the peak (model FLOPs utilisation)."""
    usd_per_hour: float = Field(ge=0)
    source: str = "the search space's hardware section"
    mfu_by_params: Annotated[list[tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0, le=1)]]],
                             Field(min_length=1)] | None = None
    """MFU by model size, ``[[params, mfu], ...]``: interpolated linearly in log params and clamped
    at the ends (``optimix.core.hardware``); ``mfu`` stays the figure for a trial of unknown size."""

    @model_validator(mode="after")
    def _sizes_once(self) -> HardwareSection:
        sizes = [params for params, _ in self.mfu_by_params or []]
        if len(set(sizes)) < len(sizes):
            raise KeyedError("mfu_by_params", "a size is given twice")
        return self


class TrialConfig(StrictModel):
    """Everything one trial needs: the fixed point of a search space."""

    name: str = Field("optimix", min_length=1, json_schema_extra=NOT_TRAINED)
    seed: int = Field(0, ge=0, le=2**32 - 1, json_schema_extra=PER_MODEL)
    """Seeds data, model and sampler: below 2**32, as Optuna's samplers (numpy's RandomState)
    need it."""
    tasks: dict[str, TaskSpec]
    mixture: MixtureConfig = Field(json_schema_extra=PER_MODEL)
    model: ModelConfig = Field(default_factory=ModelConfig, json_schema_extra=AS_SHAPE)
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig, json_schema_extra=PER_MODEL)
    search: SearchConfig = Field(default_factory=SearchConfig, json_schema_extra=NOT_TRAINED)
    hardware: HardwareSection | None = Field(None, json_schema_extra=NOT_TRAINED)

    @model_validator(mode="after")
    def _rare_task_known(self) -> TrialConfig:
        if not self.tasks:
            raise KeyedError("tasks", "no tasks given")
        for name in self.tasks:
            if not name.replace("_", "").replace("-", "").isascii() or not name.replace("_", "").replace("-", "").isalnum():
                raise KeyedError(f"tasks.{name}", "a task name must be ASCII letters, digits, '_' or '-'")
            if len(name) > MAX_TASK_NAME:  # it becomes MLflow keys (curve/loss/NAME), at most 250 long
                raise KeyedError(f"tasks.{name[:20]}...", f"a task name is at most {MAX_TASK_NAME} characters "
                                  f"(this one has {len(name)})")
        specs = self.mixture.rare_specs()
        for name in specs:
            if name not in self.tasks:
                key = "mixture.rare_task" if self.mixture.rare is None else f"mixture.rare.{name}"
                raise KeyedError(key, f"unknown task {name!r} (tasks: {', '.join(self.tasks)})")
        for i, name in enumerate(self.eval.curve_tasks or []):
            if name not in self.tasks:
                raise KeyedError(f"eval.curve_tasks.{i}", f"unknown task {name!r} (tasks: {', '.join(self.tasks)})")
        others = [n for n in self.tasks if n not in specs]
        bulk = self.mixture.weights or {n: self.tasks[n].weight for n in others}
        if sorted(bulk) != sorted(others) or min(bulk.values(), default=0) < 0:
            raise KeyedError("mixture.weights", f"weigh each non-rare task ({', '.join(others)}) by a number >= 0")
        if sum(spec.freq for spec in specs.values()) < 1 and not others:
            raise KeyedError("tasks", f"{'rare_freq' if len(specs) == 1 else 'rare shares summing'} < 1 "
                             "needs at least one other task")
        if others and sum(bulk.values()) <= 0:
            raise KeyedError("tasks", "the weights of the non-rare tasks sum to 0")
        single = self.mixture.rare is None
        for name, spec in specs.items():
            if spec.delivery == "bursts" and spec.freq > spec.burst_duty:
                raise KeyedError("mixture.burst_duty" if single else f"mixture.rare.{name}.burst_duty",
                                 f"{spec.burst_duty} is below {'rare_freq=' if single else 'its share '}"
                                 f"{spec.freq}: a burst cannot carry more than all of its sequences")
        peak = sum(s.freq / s.burst_duty if s.delivery == "bursts" else s.freq for s in specs.values())
        if peak > 1 + 1e-12:  # overlapping bursts (and the even shares beside them) must fit a step
            raise KeyedError("mixture.rare", f"at their densest the rare tasks would fill {peak:.3g} of a "
                             "step's sequences: lower the shares or raise burst_duty")
        return self

    @staticmethod
    def meaning(key: str) -> FieldMeaning:
        """What the field at dotted ``key`` means to a search (``config_base.FieldMeaning``)."""
        return field_meaning(TrialConfig, key)

    def get(self, key: str) -> Any:
        """The value at a dotted key (``model.d_model``)."""
        node: Any = self
        for part in key.split("."):
            node = node[part] if isinstance(node, Mapping) else getattr(node, part)
        return node


# ---------------------------------------------------------------------------------------------
# Validation errors as one line


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, prefix: str = "", values: Mapping[str, Any] | None = None) -> M:
    """``model`` built from ``data``, or a ``SpaceError`` whose one line names the dotted key
    (``prefix`` goes before it; ``values`` are searched values, see ``_one_line_error``)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:  # a KeyedError in a validator arrives inside one
        raise _one_line_error(err, prefix, values) from None


def _one_line_error(
    err: ValidationError, prefix: str = "", values: Mapping[str, Any] | None = None
) -> SpaceError:
    """The first pydantic error as ``dotted.key: message`` on one line; ``prefix`` goes before
    the key, and a key in ``values`` (a searched value) is said to be one."""
    first = err.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    # A discriminated union puts the tag in the path (``tasks.a.copy.length``), a plain union
    # the section's class (``search.replicates.ReplicatesConfig.seeds``): drop them.
    if len(loc) >= 3 and loc[0] == "tasks" and loc[2] in _TASK_KINDS:
        del loc[2]
    loc = [p for p in loc if not p.endswith("Config")]
    key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "<top>"
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "missing"
    elif kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        message = f"unknown task kind {tag!r} (kinds: {', '.join(_TASK_KINDS)})"
        key += ".kind"
    elif kind == "union_tag_not_found":
        message = f"missing kind (kinds: {', '.join(_TASK_KINDS)})"
        key += ".kind"
    elif kind == "value_error":
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, KeyedError):
            key = prefix + ".".join([*loc, cause.key])
            message = cause.message
        else:
            message = str(cause or first["msg"])
    else:
        message = f"{first['msg'].lower()}, got {short_repr(first.get('input'))}"
    if values and key in values:
        message += " (at a searched value)"
    return SpaceError(f"{key}: {message}".replace("\n", " "))


def first_line(err: BaseException) -> str:
    """An exception's first line (at most 200 characters), for messages."""
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


def short_repr(value: Any) -> str:
    """``repr`` cut to 40 characters, for messages."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{dotted.key: value}`` (the params' names)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
