"""Search-space files: YAML in, typed configs out.

A search space is a trial config (``TrialConfig``) in which any leaf may be a *search
dimension* instead of a fixed value: a mapping with a ``dist`` key::

    mixture:
      rare_freq: {dist: loguniform, low: 0.003, high: 0.1, default: 0.01}
      delivery: {dist: choice, values: [even, bursts]}
    model:
      d_model: {dist: int, low: 32, high: 128, step: 16}

Loading happens in three layers, as in lingua's ``args.py``: the defaults of the typed
configs, then the YAML, then ``--set dotted.key=value`` overrides (an override of a
dimension fixes it). Everything is validated here, once; every error is a ``SpaceError``
whose message is one line naming the dotted key (``model.d_modle: unknown key``).
The rest of optimix only sees ``Space`` and ``TrialConfig`` objects, never raw dicts.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# ---------------------------------------------------------------------------------------------
# Errors


class SpaceError(ValueError):
    """A search space that cannot be used; the message is one line naming the key."""

    def __init__(self, message: str):
        # Keys and values can hold line breaks: keep the message on one line.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


# ---------------------------------------------------------------------------------------------
# The typed trial config. Field names are the dotted keys of YAML, --set and MLflow params.


MAX_TASK_NAME = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SequenceTask(_Strict):
    """copy / reverse / sort: ``[TAG x1..xL SEP y1..yL]`` over ``alphabet`` symbols."""

    kind: Literal["copy", "reverse", "sort"]
    weight: float = Field(1.0, ge=0)
    length: int = Field(6, ge=1, le=64)
    alphabet: int = Field(16, ge=2, le=1024)


class FactsTask(_Strict):
    """Key -> value facts (Gu et al. style fact recall; with ``zipf > 0`` a background).

    ``n_facts`` random keys of ``key_len`` symbols, each mapped to ``value_len`` symbols.
    Training samples facts with probability proportional to ``rank ** -zipf``: with
    ``zipf = 1`` and thousands of facts the tail is never exhausted, so the task keeps
    competing for capacity (a non-saturating background). Evaluation is recall of the
    facts themselves (memorisation has no held-out inputs), on a uniform sample.
    """

    kind: Literal["facts"]
    weight: float = Field(1.0, ge=0)
    n_facts: int = Field(100, ge=1, le=10_000_000)
    key_len: int = Field(3, ge=1, le=16)
    value_len: int = Field(2, ge=1, le=16)
    alphabet: int = Field(64, ge=2, le=1024)
    zipf: float = Field(0.0, ge=0)


class ArithmeticTask(_Strict):
    """The study's injected tasks as ``[TAG a b SEP label]`` (modadd: (a+b) mod p; compare: a<b).

    A fixed ``eval_fraction`` of the (a, b) pairs is held out and never trained on.
    ``heldout: unordered`` holds out (b, a) with every held-out (a, b), so that a model
    cannot answer a held-out pair from its trained mirror (modadd commutes; compare's
    answer for (b, a) gives (a, b)'s); ``ordered`` (the default) holds out ordered pairs.
    """

    kind: Literal["modadd", "compare"]
    weight: float = Field(1.0, ge=0)
    p: int = Field(23, ge=2, le=1024)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    heldout: Literal["ordered", "unordered"] = "ordered"


class DatasetTask(_Strict):
    """Prompt/answer rows from ``datasets``: a local file (JSON/CSV/Parquet, by its suffix or
    its first bytes) or folder of data files, or a hub name. A path that exists is local;
    loading makes it absolute (``_check_files``).

    Text is tokenised by characters. Rows whose prompt occurs in the held-out part are
    removed from training, so evaluation shares no input with training.
    """

    kind: Literal["dataset"]
    weight: float = Field(1.0, ge=0)
    path: str
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    split: str = "train"
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_rows: int | None = Field(None, ge=2)
    max_chars: int = Field(64, ge=1, le=1024)


TaskSpec = Annotated[
    SequenceTask | FactsTask | ArithmeticTask | DatasetTask, Field(discriminator="kind")
]


class MixtureConfig(_Strict):
    """How training sequences are drawn from the tasks."""

    rare_task: str
    """Name of the task whose frequency is searched."""
    rare_freq: float = Field(0.01, gt=0, le=1)
    """Exact expected share of training sequences that belong to the rare task."""
    delivery: Literal["even", "bursts"] = "even"
    """``even``: spread uniformly; ``bursts``: same long-run share, packed into bursts."""
    burst_period: int = Field(100, ge=2)
    """Steps between the starts of two bursts."""
    burst_duty: float = Field(0.1, gt=0, le=1)
    """Fraction of each period that carries the burst."""


class ModelConfig(_Strict):
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
            raise _KeyedError("n_head", f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        return self


class TrainConfig(_Strict):
    """One plain training loop: AdamW, warmup then cosine or WSD, grad clipping."""

    tokens: int | None = Field(None, ge=1)
    """Training tokens (batch x sequence positions x steps); or give ``flops``."""
    flops: float | None = Field(None, gt=0)
    """Training FLOPs; tokens are derived from the model's FLOPs per token (iso-FLOP trials)."""
    batch_size: int = Field(64, ge=1, le=1 << 16)
    lr: float = Field(3e-3, gt=0, le=10)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.98, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_frac: float = Field(0.05, ge=0, lt=1)
    schedule: Literal["cosine", "wsd"] = "cosine"
    min_lr_frac: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool = False
    """``torch.compile`` the model (CUDA only; ignored on CPU)."""
    threads: int | None = Field(None, ge=1)
    """Torch intra-op threads; default: the CPUs given to the trial."""
    diverge_factor: float = Field(4.0, gt=1)
    """Loss above this multiple of the initial loss (or NaN) ends the trial as diverged."""
    max_wall_s: float | None = Field(None, gt=0)
    """A time limit: a trial still training after this many seconds ends as failed."""
    fault: Literal["none", "raise", "nan", "exit"] = "none"
    """Fault injection, to see how a search handles failing trials: ``raise`` an error,
    turn the loss ``nan``, or ``exit`` the worker process, at the first training step."""

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if (self.tokens is None) == (self.flops is None):
            raise _KeyedError("tokens", "give exactly one of train.tokens or train.flops")
        return self


class EvalConfig(_Strict):
    points: int = Field(4, ge=1, le=1000)
    """Evaluations spread evenly over training (the learning curve); the last is the final one."""
    size: int = Field(512, ge=1, le=1_000_000)
    """Held-out sequences per task."""
    batch_size: int = Field(1024, ge=1)
    curve_tasks: list[str] | None = None
    """Tasks evaluated at the curve points before the last (default: every task; the last
    point evaluates every task). The objectives' tasks are enough for the frontier and for
    pruning, and skip most of the evaluation cost."""


class Objective(_Strict):
    metric: str
    mode: Literal["min", "max"]


class SearchConfig(_Strict):
    """How ``optimix search`` explores the space. Its entries cannot be search dimensions."""

    objectives: list[str] = Field(default_factory=list)
    """``metric:max|min`` pairs, e.g. ``[acc/facts:max, train_flops:min]``;
    default: the rare task's accuracy (max) and training FLOPs (min)."""
    sampler: Literal["auto", "frontier", "tpe", "gp", "nsga2", "random", "grid"] = "auto"
    """``auto``: for up to 100 expected trials, ``frontier`` (``optimix.sampler``: the most
    expected frontier gain per FLOP) when the objectives are one quality metric and
    ``train_flops:min``, else ``gp`` (up to 3 objectives); ``tpe`` for larger searches."""
    trials: int = Field(16, ge=1, le=1_000_000)
    budget_flops: float | None = Field(None, gt=0)
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    save_models: Literal["frontier", "all", "none"] = "none"
    stack: int = Field(1, ge=1, le=256)
    """Models trained together in one trial slot (``optimix.stacked``): up to this many
    proposals that share everything but their per-model settings (seed, mixture, optimiser
    settings) train as one stacked model in one process; on a GPU small models train many
    times faster so. Each stays its own trial in Optuna, MLflow and the ledger."""
    startup_trials: int | None = Field(None, ge=1)
    """Space-filling first points before the sampler's model takes over (tpe, gp); default: a quarter of
    the trials the budget is expected to buy (``optimix plan SPACE``), between 3 and 10."""
    curve_candidates: bool = True
    """Learning-curve points count as frontier candidates (see ``optimix.frontier``)."""
    prune: Literal["none", "dominated"] = "none"
    """``dominated``: stop a trial whose curve point is beaten at no more FLOPs by the
    current frontier by more than ``prune_margin``; it ends ``pruned`` (told to Optuna so)."""
    prune_margin: float = Field(0.05, ge=0)
    prune_from: float = Field(0.5, gt=0, le=1)
    """Pruning is considered only at curve points at least this far through training."""


class HardwareSection(_Strict):
    """A cost profile for ``optimix plan`` (see ``optimix.hardware`` for the built-in ones)."""

    name: str = Field("space", min_length=1)
    peak_flops_per_s: float = Field(gt=0)
    mfu: float = Field(gt=0, le=1)
    """Achieved share of the peak (model FLOPs utilisation)."""
    usd_per_hour: float = Field(ge=0)
    source: str = "the search space's hardware section"


class TrialConfig(_Strict):
    """Everything one trial needs: the fixed point of a search space."""

    name: str = Field("optimix", min_length=1)
    seed: int = Field(0, ge=0)
    tasks: dict[str, TaskSpec]
    mixture: MixtureConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    hardware: HardwareSection | None = None

    @model_validator(mode="after")
    def _rare_task_known(self) -> TrialConfig:
        if not self.tasks:
            raise _KeyedError("tasks", "no tasks given")
        for name in self.tasks:
            if not name.replace("_", "").replace("-", "").isascii() or not name.replace("_", "").replace("-", "").isalnum():
                raise _KeyedError(f"tasks.{name}", "a task name must be ASCII letters, digits, '_' or '-'")
            if len(name) > MAX_TASK_NAME:  # it becomes MLflow keys (curve/loss/NAME), at most 250 long
                raise _KeyedError(f"tasks.{name[:20]}...", f"a task name is at most {MAX_TASK_NAME} characters "
                                  f"(this one has {len(name)})")
        if self.mixture.rare_task not in self.tasks:
            raise _KeyedError(
                "mixture.rare_task",
                f"unknown task {self.mixture.rare_task!r} (tasks: {', '.join(self.tasks)})",
            )
        for i, name in enumerate(self.eval.curve_tasks or []):
            if name not in self.tasks:
                raise _KeyedError(f"eval.curve_tasks.{i}", f"unknown task {name!r} (tasks: {', '.join(self.tasks)})")
        others = [n for n in self.tasks if n != self.mixture.rare_task]
        if self.mixture.rare_freq < 1 and not others:
            raise _KeyedError("tasks", "rare_freq < 1 needs at least one other task")
        if others and sum(self.tasks[n].weight for n in others) <= 0:
            raise _KeyedError("tasks", "the weights of the non-rare tasks sum to 0")
        if self.mixture.delivery == "bursts" and self.mixture.rare_freq > self.mixture.burst_duty:
            raise _KeyedError(
                "mixture.burst_duty",
                f"{self.mixture.burst_duty} is below rare_freq={self.mixture.rare_freq}: "
                "a burst cannot carry more than all of its sequences",
            )
        return self

    def get(self, key: str) -> Any:
        """The value at a dotted key (``model.d_model``)."""
        node: Any = self
        for part in key.split("."):
            node = node[part] if isinstance(node, Mapping) else getattr(node, part)
        return node


class _KeyedError(ValueError):
    """A cross-field check that knows which dotted key is at fault."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


# ---------------------------------------------------------------------------------------------
# Search dimensions


class Dimension(_Strict):
    """One searched entry. ``grid`` lists the values the grid sampler uses."""

    dist: Literal["uniform", "loguniform", "int", "choice"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: list[Any] | None = None
    default: Any = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if self.dist == "choice":
            if not self.values:
                raise _KeyedError("values", "a choice needs a non-empty list of values")
            if self.low is not None or self.high is not None:
                raise _KeyedError("low", "a choice takes values, not low/high")
            if self.default is not None and self.default not in self.values:
                raise _KeyedError("default", f"{self.default!r} is not one of the values")
            return self
        if self.values is not None:
            raise _KeyedError("values", f"values belong to a choice, not to {self.dist}")
        if self.log and self.dist != "int":
            raise _KeyedError("log", f"log applies to int dimensions; use dist: loguniform for {self.dist}")
        for end in ("low", "high"):
            value = getattr(self, end)
            if value is None:
                raise _KeyedError(end, f"a {self.dist} dimension needs {end}")
            if not math.isfinite(value):
                raise _KeyedError(end, f"{value} is not finite")
        if self.low >= self.high:
            raise _KeyedError("high", f"empty range: low={self.low} >= high={self.high}")
        if self.dist == "loguniform" or (self.dist == "int" and self.log):
            if self.low <= 0:
                raise _KeyedError("low", f"a log scale needs low > 0, got {self.low}")
        if self.dist == "int":
            for end in ("low", "high"):
                if abs(getattr(self, end)) > 2**53:
                    raise _KeyedError(end, f"{getattr(self, end):g} is too large for an int dimension")
                if getattr(self, end) != int(getattr(self, end)):
                    raise _KeyedError(end, f"an int dimension needs whole numbers, got {getattr(self, end)}")
            if self.step is not None and (not math.isfinite(self.step) or self.step < 1 or self.step != int(self.step)):
                raise _KeyedError("step", f"an int step must be a whole number >= 1, got {self.step}")
        elif self.step is not None and (self.step <= 0 or not math.isfinite(self.step)):
            raise _KeyedError("step", f"step must be a finite number > 0, got {self.step}")
        if self.default is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, int | float):
                raise _KeyedError("default", f"{self.default!r} is not a number")
            if not self.low <= self.default <= self.high:
                raise _KeyedError("default", f"{self.default} is outside [{self.low}, {self.high}]")
        if self.grid is not None and not self.grid:
            raise _KeyedError("grid", "an empty grid")
        return self

    def middle(self) -> Any:
        """The value ``optimix train`` uses: the default, else the middle of the range."""
        if self.default is not None:
            return int(self.default) if self.dist == "int" else self.default
        if self.dist == "choice":
            return self.values[(len(self.values) - 1) // 2]
        if self.dist == "loguniform" or self.log:
            mid = math.sqrt(self.low * self.high)
        else:
            mid = (self.low + self.high) / 2
        if self.dist == "int":
            step = int(self.step or 1)
            return int(self.low + step * round((mid - self.low) / step))
        return mid

    def candidates(self) -> list[Any]:
        """Values worth type-checking: the ends, the middle, every choice, the grid."""
        if self.dist == "choice":
            values = list(self.values)
        elif self.dist == "int":
            values = [int(self.low), int(self.high), self.middle()]
        else:
            values = [self.low, self.high, self.middle()]
        return values + list(self.grid or [])


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class Space:
    """A loaded search space: the base config, and the dimensions keyed by dotted name."""

    base: TrialConfig
    """The config at every dimension's middle (what ``optimix train`` runs)."""
    dimensions: dict[str, Dimension]
    tree: dict[str, Any] = field(repr=False)
    """The resolved YAML (after overrides), dimensions included: logged as an artifact."""
    source: str = ""

    @property
    def name(self) -> str:
        return self.base.name

    def resolve(self, point: Mapping[str, Any]) -> TrialConfig:
        """The trial config at ``point`` (dotted key -> value); missing dimensions take their middle."""
        unknown = set(point) - set(self.dimensions)
        if unknown:
            key = sorted(unknown)[0]
            raise SpaceError(f"{key}: not a search dimension of this space")
        values = {key: dim.middle() for key, dim in self.dimensions.items()}
        values.update(point)
        return _validate_at(self.tree, values)


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Space:
    """Read, override and validate a search-space file; ``SpaceError`` on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SpaceError(f"{path}: cannot read ({err.strerror or err})") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise SpaceError(f"{path}: larger than {_MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text (byte {err.start})") from None
    tree = parse_yaml(text, str(path))
    space = build_space(tree, overrides)
    space.source = str(path)
    _check_files(space, path.parent)
    return space


def parse_yaml(text: str, where: str = "<string>") -> dict[str, Any]:
    """Safe YAML with no aliases (a YAML bomb cannot expand) into a mapping."""
    try:
        tree = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpaceError(f"{where}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise SpaceError(f"{where}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, OverflowError) as err:  # a scalar's constructor
        raise SpaceError(f"{where}: invalid YAML value: {_first_line(err)}") from None
    if tree is None:
        raise SpaceError(f"{where}: empty file")
    if not isinstance(tree, dict):
        raise SpaceError(f"{where}: the top level must be a mapping, got {type(tree).__name__}")
    return tree


def build_space(tree: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Space:
    """Apply ``--set`` overrides to a parsed tree, find its dimensions and validate them."""
    tree = copy.deepcopy(dict(tree))
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    dimensions: dict[str, Dimension] = {}
    _collect_dimensions(tree, "", dimensions)
    for key in dimensions:
        if key.split(".")[0] in ("search", "name", "hardware"):
            raise SpaceError(f"{key}: cannot be a search dimension")
    base = _validate_at(tree, {k: d.middle() for k, d in dimensions.items()})
    parse_objectives(base)
    # Type-check every dimension across its range: the error names the dimension's key.
    for key, dim in dimensions.items():
        for value in dim.candidates():
            values = {k: d.middle() for k, d in dimensions.items()}
            values[key] = value
            _validate_at(tree, values)
    return Space(base=base, dimensions=dimensions, tree=tree)


def parse_override(text: str) -> tuple[str, Any]:
    """``model.d_model=64`` -> (``model.d_model``, 64); the value is read as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpaceError(f"--set {text}: expected KEY=VALUE")
    if not all(key.split(".")):
        raise SpaceError(f"--set {text}: {key!r} has an empty part")
    try:
        parsed = yaml.load(value, Loader=_NoAliasLoader)  # noqa: S506
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, OverflowError, RecursionError):
        raise SpaceError(f"{key}: cannot parse value {_short(value)}") from None
    return key, parsed


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


_MAX_FILE_BYTES = 1 << 20
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (search spaces never need them, bombs do) and
    reads ``1e6`` and ``3.4e7`` as floats (YAML 1.1 wants ``1.0e+6``; people write budgets
    the short way)."""

    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed in a search space", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            key = key_node.value
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_NoAliasLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict) or _is_dimension(child):
            raise SpaceError(f"{'.'.join(parts[: i + 1])}: not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def _is_dimension(node: Any) -> bool:
    """A mapping with a ``dist`` entry that is not itself a section (a task named ``dist``)."""
    return isinstance(node, dict) and "dist" in node and not isinstance(node["dist"], dict)


def _collect_dimensions(node: Any, prefix: str, out: dict[str, Dimension]) -> None:
    if not isinstance(node, dict):
        return
    for key, child in node.items():
        if not isinstance(key, str):
            raise SpaceError(f"{prefix}{key!r}: keys must be strings")
        dotted = f"{prefix}{key}"
        if _is_dimension(child):
            try:
                out[dotted] = Dimension.model_validate(child)
            except _KeyedError as err:
                raise SpaceError(f"{dotted}.{err.key}: {err.message}") from None
            except ValidationError as err:
                raise _space_error(err, prefix=f"{dotted}.") from None
        else:
            _collect_dimensions(child, f"{dotted}.", out)


def _validate_at(tree: Mapping[str, Any], values: Mapping[str, Any]) -> TrialConfig:
    concrete = _substitute(tree, values, "")
    try:
        return TrialConfig.model_validate(concrete)
    except ValidationError as err:
        raise _space_error(err, values=values) from None
    except _KeyedError as err:
        raise SpaceError(f"{err.key}: {err.message}") from None


def _substitute(node: Any, values: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for key, child in node.items():
        dotted = f"{prefix}{key}"
        out[key] = values[dotted] if dotted in values else _substitute(child, values, f"{dotted}.")
    return out


def _space_error(
    err: ValidationError, prefix: str = "", values: Mapping[str, Any] | None = None
) -> SpaceError:
    """The first pydantic error as ``dotted.key: message`` on one line."""
    first = err.errors(include_url=False)[0]
    loc = [str(p) for p in first["loc"]]
    # A discriminated union puts the tag in the path (``tasks.a.copy.length``): drop it.
    if len(loc) >= 3 and loc[0] == "tasks" and loc[2] in _TASK_KINDS:
        del loc[2]
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
        if isinstance(cause, _KeyedError):
            key = prefix + ".".join([*loc, cause.key])
            message = cause.message
        else:
            message = str(cause or first["msg"])
    else:
        message = f"{first['msg'].lower()}, got {_short(first.get('input'))}"
    if values and key in values:
        message += " (at a searched value)"
    return SpaceError(f"{key}: {message}".replace("\n", " "))


_TASK_KINDS = ("copy", "reverse", "sort", "facts", "modadd", "compare", "dataset")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_files(space: Space, base_dir: Path) -> None:
    """Every local path a dataset task can take, checked and made absolute in the space.

    Fixed paths, a path dimension's ``values``, ``grid`` and ``default``, and the paths of
    ``search.points_to_evaluate``: each is resolved against the working directory, then the
    space file's folder. Absolute paths keep a trial independent of where it runs (a Ray
    worker has a working directory of its own). The tree, the dimensions and the base config
    are rewritten together.
    """
    tasks = space.tree.get("tasks")
    keys = []
    for name, task in (tasks.items() if isinstance(tasks, dict) else ()):
        if not isinstance(task, dict) or task.get("kind") != "dataset" or "path" not in task:
            continue
        key = f"tasks.{name}.path"
        keys.append(key)
        node = task["path"]
        if not _is_dimension(node):
            task["path"] = _local_path(node, key, base_dir)
            continue
        for entry in ("values", "grid"):
            if isinstance(node.get(entry), list):
                node[entry] = [_local_path(v, f"{key}.{entry}.{i}", base_dir)
                               for i, v in enumerate(node[entry])]
        if node.get("default") is not None:
            node["default"] = _local_path(node["default"], f"{key}.default", base_dir)
        space.dimensions[key] = Dimension.model_validate(node)
    search = space.tree.get("search")
    points = search.get("points_to_evaluate") if isinstance(search, dict) else None
    for i, point in enumerate(points if isinstance(points, list) else ()):
        for key in keys:
            if isinstance(point, dict) and key in point:
                point[key] = _local_path(point[key], f"search.points_to_evaluate.{i}.{key}", base_dir)
    if keys:
        space.base = _validate_at(space.tree, {k: d.middle() for k, d in space.dimensions.items()})


def _local_path(value: Any, key: str, base_dir: Path) -> Any:
    """A dataset path made absolute when it is local: it exists (a file or a folder, whatever
    its suffix) or looks like a file path (then it must exist). Else a hub name, unchanged."""
    if not isinstance(value, str):
        return value  # the config's validation names a path that is not text
    try:
        resolved = resolve_data_path(value, base_dir)
        exists = resolved.exists()
    except (OSError, RuntimeError, ValueError) as err:
        raise SpaceError(f"{key}: unusable path ({_first_line(err)})") from None
    if exists:
        return str(resolved)
    if _looks_local(value):
        raise SpaceError(f"{key}: no such file {value!r}")
    return value


def _looks_local(path: str) -> bool:
    """Whether a path that does not exist still names a file (a data suffix, or ``/``, ``.``,
    ``~`` in front) rather than a hub dataset."""
    return Path(path).suffix.lower() in _DATA_SUFFIXES or path.startswith(("/", ".", "~"))


_DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet"}


def resolve_data_path(path: str, base_dir: Path) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        here = (Path.cwd() / candidate).resolve()
        candidate = here if here.exists() else (base_dir / candidate).resolve()
    return candidate.resolve()


def parse_objectives(config: TrialConfig) -> list[Objective]:
    """``search.objectives`` as typed pairs; default: rare-task accuracy up, FLOPs down."""
    specs = config.search.objectives or [f"acc/{config.mixture.rare_task}:max", "train_flops:min"]
    out = []
    for i, spec in enumerate(specs):
        metric, sep, mode = spec.rpartition(":")
        if not sep or mode not in ("min", "max") or not metric:
            raise SpaceError(f"search.objectives.{i}: expected 'metric:max' or 'metric:min', got {spec!r}")
        out.append(Objective(metric=metric, mode=mode))
    if len({o.metric for o in out}) != len(out):
        raise SpaceError("search.objectives: a metric is named twice")
    from optimix.tracking import metric_names

    names = metric_names(config.tasks)
    known = {n for group in names.values() for n in group}
    for i, objective in enumerate(out):
        if objective.metric not in known:
            raise SpaceError(f"search.objectives.{i}: unknown metric {objective.metric!r} "
                             f"(e.g. {', '.join(names['acc'][:2] + ['train_flops', 'params'])})")
    if config.search.stack > 1 and config.search.prune != "none":
        raise SpaceError("search.stack: stacked trials cannot be pruned one by one; "
                         "set search.prune: none or search.stack: 1")
    if config.search.sampler == "frontier" and (
            len(out) != 2 or ("train_flops", "min") not in [(o.metric, o.mode) for o in out]):
        raise SpaceError("search.sampler: 'frontier' needs two objectives, one of them train_flops:min")
    if config.search.prune == "dominated":
        from optimix.frontier import curve_usable

        pairs = [(o.metric, o.mode) for o in out]
        if ("train_flops", "min") not in pairs or len(pairs) < 2 or not curve_usable(pairs):
            raise SpaceError("search.prune: 'dominated' needs the objectives train_flops:min and "
                             "accuracies, losses or cost counts (known at every curve point)")
    return out
