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
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import model_validator

from optimix.core.config import (
    KeyedError,
    SpaceError,
    StrictModel,
    TrialConfig,
    first_line,
    short_repr,
    validated,
)
from optimix.core.data_paths import check_revision, local_path
from optimix.core.metrics import SearchSpec

# ---------------------------------------------------------------------------------------------
# Search dimensions


QUANTA = 500
"""Places along a float range that train distinct models (``Dimension.quantum``): 0.7% apart
in a frequency range of 0.003 to 0.1."""


class Dimension(StrictModel):
    """One searched entry. ``grid`` lists the values the grid sampler uses."""

    dist: Literal["uniform", "loguniform", "int", "choice", "simplex"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    values: list[Any] | None = None
    default: Any = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if self.dist == "simplex":
            names = self.values or []
            if len(names) < 2 or len(set(map(str, names))) != len(names):
                raise KeyedError("values", "a simplex needs two or more distinct task names")
            extra = [k for k in ("low", "high", "step", "default", "grid") if getattr(self, k) is not None]
            if extra:
                raise KeyedError(extra[0], "a simplex takes only values (the task names it weighs)")
            return self
        if self.dist == "choice":
            if not self.values:
                raise KeyedError("values", "a choice needs a non-empty list of values")
            if self.low is not None or self.high is not None:
                raise KeyedError("low", "a choice takes values, not low/high")
            if self.default is not None and self.default not in self.values:
                raise KeyedError("default", f"{self.default!r} is not one of the values")
            return self
        if self.values is not None:
            raise KeyedError("values", f"values belong to a choice, not to {self.dist}")
        if self.log and self.dist != "int":
            raise KeyedError("log", f"log applies to int dimensions; use dist: loguniform for {self.dist}")
        for end in ("low", "high"):
            value = getattr(self, end)
            if value is None:
                raise KeyedError(end, f"a {self.dist} dimension needs {end}")
            if not math.isfinite(value):
                raise KeyedError(end, f"{value} is not finite")
        if self.low >= self.high:
            raise KeyedError("high", f"empty range: low={self.low} >= high={self.high}")
        if self.is_log and self.low <= 0:
            raise KeyedError("low", f"a log scale needs low > 0, got {self.low}")
        if self.dist == "int":
            for end, value in (("low", self.low), ("high", self.high)):
                if abs(value) > 2**53:
                    raise KeyedError(end, f"{value:g} is too large for an int dimension")
                if value != int(value):
                    raise KeyedError(end, f"an int dimension needs whole numbers, got {value}")
            if self.step is not None and (not math.isfinite(self.step) or self.step < 1 or self.step != int(self.step)):
                raise KeyedError("step", f"an int step must be a whole number >= 1, got {self.step}")
        elif self.step is not None and (self.step <= 0 or not math.isfinite(self.step)):
            raise KeyedError("step", f"step must be a finite number > 0, got {self.step}")
        if self.default is not None:
            if isinstance(self.default, bool) or not isinstance(self.default, int | float):
                raise KeyedError("default", f"{self.default!r} is not a number")
            if not self.low <= self.default <= self.high:
                raise KeyedError("default", f"{self.default} is outside [{self.low}, {self.high}]")
        if self.grid is not None and not self.grid:
            raise KeyedError("grid", "an empty grid")
        return self

    @property
    def is_log(self) -> bool:
        """Whether the dimension is searched in log scale (loguniform, or an int with ``log``)."""
        return self.dist == "loguniform" or (self.dist == "int" and self.log)

    def at(self, u: float) -> Any:
        """The value at ``u`` in [0, 1]: optimix's one mapping from a unit number to a value
        (first points, random draws, the frontier sampler's candidates). A choice gives each
        value an equal slice of [0, 1]; a range is linear in ``u`` (in log scale for a log
        dimension), then put on its step and type (``_snap``)."""
        if self.dist == "choice":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.is_log:
            low, high = math.log(self.low), math.log(self.high)
            return self._snap(math.exp(low + u * (high - low)))
        return self._snap(self.low + u * (self.high - self.low))

    def unit(self, value: float) -> float:
        """Where a number lies along a range dimension, 0 at ``low`` and 1 at ``high`` (in log
        scale for a log dimension): ``at``'s inverse, up to its rounding."""
        scale = math.log if self.is_log else float
        low, high = scale(self.low), scale(self.high)
        return (scale(value) - low) / (high - low)

    def quantum(self, value: Any) -> Any:
        """``value`` as far as it changes what a trial trains: a float range without a step
        rounded to one of ``QUANTA`` even places along it (in log scale for a log dimension),
        so that 0.09998 and 0.1 are one frequency; anything else as it is."""
        if self.dist not in ("uniform", "loguniform") or self.step or isinstance(value, bool):
            return value
        return self.at(round(min(1.0, max(0.0, self.unit(float(value)))) * QUANTA) / QUANTA)

    def _snap(self, value: float) -> int | float:
        """``value`` on the dimension: with a step (an int's is 1 at least), the nearest
        ``low + k * step`` that is not above ``high``, in decimal as Optuna reckons its range
        (``0.3``, not ``0.30000000000000004``); inside [low, high]; an int for an int."""
        if self.dist == "int" or self.step:
            low, step = Decimal(str(self.low)), Decimal(str(self.step or 1))
            last = int((Decimal(str(self.high)) - low) // step)
            value = float(low + step * min(max(round((value - self.low) / float(step)), 0), last))
        value = min(self.high, max(self.low, value))
        return int(round(value)) if self.dist == "int" else float(value)

    def middle(self) -> Any:
        """The value ``optimix train`` uses: the default, else the middle of the range (in log
        scale for a log dimension), an int dimension's on its step."""
        if self.default is not None:
            return int(self.default) if self.dist == "int" else self.default
        if self.dist == "choice":
            return self.values[(len(self.values) - 1) // 2]
        mid = math.sqrt(self.low * self.high) if self.is_log else (self.low + self.high) / 2
        return self._snap(mid) if self.dist == "int" else mid

    def candidates(self) -> list[Any]:
        """Values worth type-checking: the ends, the middle, every choice, the grid."""
        if self.dist == "choice":
            return [*self.values, *(self.grid or [])]
        ends = [int(self.low), int(self.high)] if self.dist == "int" else [self.low, self.high]
        return [*ends, self.middle(), *(self.grid or [])]


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
    spec: SearchSpec = field(repr=False)
    """The objectives and constraints, parsed once (``build_space``)."""
    source: str = ""

    @property
    def name(self) -> str:
        return self.base.name

    def resolve(self, point: Mapping[str, Any]) -> TrialConfig:
        """The trial config at ``point`` (dotted key -> value); missing dimensions take their middle."""
        unknown = sorted(set(point) - set(self.dimensions))
        if unknown:
            raise SpaceError(f"{unknown[0]}: not a search dimension of this space")
        middles = {key: dim.middle() for key, dim in self.dimensions.items()}
        return _validate_at(self.tree, {**middles, **point})


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = (), ranges: bool = True) -> Space:
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
    space = build_space(tree, overrides, ranges)
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
        raise SpaceError(f"{where}: invalid YAML value: {first_line(err)}") from None
    if tree is None:
        raise SpaceError(f"{where}: empty file")
    if not isinstance(tree, dict):
        raise SpaceError(f"{where}: the top level must be a mapping, got {type(tree).__name__}")
    return tree


def build_space(tree: Mapping[str, Any], overrides: list[str] | tuple[str, ...] = (),
                ranges: bool = True) -> Space:
    """Apply ``--set`` overrides to a parsed tree, find its dimensions and validate them: the
    config at their middles, and with ``ranges`` (a search) each across its range. ``optimix
    train`` checks only the config it trains (``ranges=False``): a choice it does not take
    (``delivery: bursts`` beside a share a burst cannot carry) is no error there."""
    tree = copy.deepcopy(dict(tree))
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(tree, key, value)
    dimensions: dict[str, Dimension] = {}
    _collect_dimensions(tree, "", dimensions)
    for key in dimensions:
        if not TrialConfig.meaning(key).trains:  # searching it would train one model twice
            raise SpaceError(f"{key}: cannot be a search dimension")
    simplexes = [k for k, v in flatten_dims(tree) if v.get("dist") == "simplex"]
    if simplexes and (tree.get("search") or {}).get("sampler") == "grid":
        raise SpaceError(f"{simplexes[0]}: the grid sampler cannot walk a simplex; choose another sampler")
    middles = {k: d.middle() for k, d in dimensions.items()}
    base = _validate_at(tree, middles)
    spec = SearchSpec.of(base)  # objectives and constraints parsed whole here, once: a search
    # that starts has nothing left to refuse in them, and carries them as ``space.spec``
    # Type-check every dimension across its range: the error names the dimension's key.
    for key, dim in dimensions.items() if ranges else ():
        for value in dim.candidates():
            _validate_at(tree, {**middles, key: value})
    return Space(base=base, dimensions=dimensions, tree=tree, spec=spec)


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
        raise SpaceError(f"{key}: cannot parse value {short_repr(value)}") from None
    return key, parsed


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
                None, None, "YAML aliases are not allowed in a search space", event.start_mark)
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


def flatten_dims(node: Any, prefix: str = "") -> list[tuple[str, dict]]:
    """Every dimension node of a tree, by dotted key (a simplex as one)."""
    out = []
    for key, child in (node.items() if isinstance(node, dict) else ()):
        if _is_dimension(child):
            out.append((f"{prefix}{key}", child))
        elif isinstance(child, dict):
            out += flatten_dims(child, f"{prefix}{key}.")
    return out


def _collect_dimensions(node: Any, prefix: str, out: dict[str, Dimension]) -> None:
    if not isinstance(node, dict):
        return
    for key, child in node.items():
        if not isinstance(key, str):
            raise SpaceError(f"{prefix}{key!r}: keys must be strings")
        dotted = f"{prefix}{key}"
        if _is_dimension(child):
            dim = validated(Dimension, child, prefix=f"{dotted}.")
            if dim.dist != "simplex":
                out[dotted] = dim
                continue
            for name in dim.values:  # the samplers see one coordinate per task (_simplex_weights)
                out[f"{dotted}.{name}"] = Dimension(dist="uniform", low=0.0, high=1.0)
        else:
            _collect_dimensions(child, f"{dotted}.", out)


def _validate_at(tree: Mapping[str, Any], values: Mapping[str, Any]) -> TrialConfig:
    """The trial config of ``tree`` with each dimension at its value in ``values``."""
    return validated(TrialConfig, _substitute(tree, values, ""), values=values)


def _substitute(node: Any, values: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(node, dict):
        return node
    out = {}
    for key, child in node.items():
        dotted = f"{prefix}{key}"
        if dotted in values:
            out[key] = values[dotted]
        elif _is_dimension(child) and child.get("dist") == "simplex":
            out[key] = _simplex_weights([values.get(f"{dotted}.{n}", 0.5) for n in child["values"]], child["values"])
        else:
            out[key] = _substitute(child, values, f"{dotted}.")
    return out


def _simplex_weights(coords: list[float], names: list[str]) -> dict[str, float]:
    """A simplex dimension's weights from its coordinates in [0, 1]: ``-log(1 - u)``
    normalised, so that uniform coordinates give a uniform (Dirichlet(1)) draw on the simplex,
    and every proposal sums to 1."""
    e = [-math.log(max(1.0 - min(max(float(u), 0.0), 1.0), 1e-12)) for u in coords]
    total = sum(e)
    if total <= 0:
        return {str(n): 1.0 / len(names) for n in names}
    return {str(n): v / total for n, v in zip(names, e, strict=True)}


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
        if not isinstance(task, dict) or task.get("kind") not in ("dataset", "text") or "path" not in task:
            continue
        key = f"tasks.{name}.path"
        keys.append(key)
        node = task["path"]
        if not _is_dimension(node):
            task["path"] = local_path(node, key, base_dir)
        check_revision(name, task)
        if not _is_dimension(node):
            continue
        for entry in ("values", "grid"):
            if isinstance(node.get(entry), list):
                node[entry] = [local_path(v, f"{key}.{entry}.{i}", base_dir)
                               for i, v in enumerate(node[entry])]
        if node.get("default") is not None:
            node["default"] = local_path(node["default"], f"{key}.default", base_dir)
        space.dimensions[key] = Dimension.model_validate(node)
    search = space.tree.get("search")
    points = search.get("points_to_evaluate") if isinstance(search, dict) else None
    for i, point in enumerate(points if isinstance(points, list) else ()):
        for key in keys:
            if isinstance(point, dict) and key in point:
                point[key] = local_path(point[key], f"search.points_to_evaluate.{i}.{key}", base_dir)
    if keys:
        space.base = _validate_at(space.tree, {k: d.middle() for k, d in space.dimensions.items()})
