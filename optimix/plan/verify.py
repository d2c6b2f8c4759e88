"""``optimix plan --verify``: the recommended config trained as a new trial, its accuracy
predicted against achieved.

The trial is the recorded trial nearest to the recommendation (in size, then frequency, then
tokens), moved to it: its params (the config keys it logged) make the tree, and the
recommended frequency, tokens and size replace its own (``verify_tree``). It trains with a
seed no recorded trial of the search used (``fresh_seed``): at a recommendation that is a
recorded trial's own point, the recorded seed would only replay that trial (training is
deterministic on CPU), which the fit has already seen; by default at 3 fresh seeds. Their mean
is checked against the interval of the expected accuracy (``interval``) and each seed against
the interval for one trained trial (``trial_interval``, seed noise included); one seed alone is
checked against ``trial_interval``. Training runs ``optimix.trial.train.run_trial``, with
no Ray or MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from optimix.core.fit import PlanError, TrialTable
from optimix.plan.plan import Config


def verify(doc: Mapping[str, Any], table: TrialTable, trials: list[Any], *,
           seed: int | None = None, seeds: int = 3) -> dict[str, Any]:
    """Train ``doc``'s predicted config (an ``optimix.plan.plan.answer`` document with ``task`` and
    ``metric``) at ``seeds`` fresh seeds; ``trials`` are the table's records
    (``records.TrialRecord``, matched to the table's rows by run id). ``seed``: the first seed
    (default ``fresh_seed(trials)``), the others follow it. The seeds' mean is judged against
    the interval of the expected accuracy (``interval``), each seed against one trial's
    (``trial_interval``)."""
    from optimix.core.space import build_space
    from optimix.trial.train import plan_trial, run_trial

    predicted = doc.get("predicted")
    if not predicted:
        raise PlanError("--verify: there is no predicted config to train "
                        + (f"({doc['predicted_error']})" if doc.get("predicted_error") else
                           "(give --budget-flops or --target-acc)"))
    config = recommended(predicted["config"])
    row = nearest_trial(table, config)
    base = record_of(trials, str(table.run_id[row]))
    recorded = float(table.params[row])
    tree = verify_tree(base.params, config, recorded)
    first = fresh_seed(trials) if seed is None else seed
    tree["seed"] = first
    trial = build_space(tree).base
    built = plan_trial(trial).shape.params
    if same_size(config.params, recorded) and built != round(recorded):
        raise PlanError(f"--verify: run {base.run_id}'s recorded config builds {built:,} params, "
                        f"the run recorded {recorded:,.0f} (its data or code changed since)")
    results = [run_trial(trial.model_copy(update={"seed": first + i})) for i in range(seeds)]
    result = results[0]
    each = [r.accuracy.get(doc["task"]) if r.status == "ok" else None for r in results]
    got = [a for a in each if a is not None]
    achieved = float(np.mean(got)) if got else None
    mean_interval = finite_interval(predicted.get("interval"))
    trial_interval = finite_interval(predicted.get("trial_interval"))
    against = (mean_interval or trial_interval) if seeds > 1 else (trial_interval or mean_interval)
    return {"status": result.status, "error": result.error, "shape_from": base.run_id,
            "seed": trial.seed, "seeds": [first + i for i in range(seeds)], "requested": config.to_dict(),
            "params": result.params, "rare_freq": trial.mixture.rare_freq, "tokens": result.tokens,
            "train_flops": result.train_flops, "predicted": predicted[doc["metric"]],
            "interval": mean_interval, "trial_interval": trial_interval,
            "checked_against": None if against is None else
            ("interval" if against is mean_interval else "trial_interval"),
            "achieved": achieved, "achieved_seeds": each, "wall_s": sum(r.wall_s for r in results),
            "within_interval": None if achieved is None or against is None
            else bool(against[0] <= achieved <= against[1]),
            "seeds_within_trial_interval": None if trial_interval is None else
            [None if a is None else bool(trial_interval[0] <= a <= trial_interval[1]) for a in each]}


def recommended(config: Mapping[str, Any]) -> Config:
    """The predicted config of an answer (its ``config`` entry) as a ``plan.Config``; entries
    that are not ``Config`` fields are ignored."""
    return Config(**{f.name: float(config[f.name]) for f in fields(Config)})


def finite_interval(value: Any) -> list[float] | None:
    """An answer's interval as [low, high], or None when it has none or a bound is not finite."""
    if not value:
        return None
    lo, hi = value
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [float(lo), float(hi)]


def fresh_seed(trials: Iterable[Any]) -> int:
    """One more than the largest ``seed`` param of the recorded trials (0 when none has one)."""
    seeds = [int(t.params["seed"]) for t in trials if str(t.params.get("seed", "")).isdigit()]
    return max(seeds, default=-1) + 1


def verify_tree(params: Mapping[str, str], config: Config, recorded_params: float) -> dict[str, Any]:
    """A trial config tree from a recorded trial's params (dotted key -> text), moved to ``config``.

    The recorded trial should be the one nearest in size. Params that are not config keys
    (``shape.*``: the shape the trial built) stay out of the tree. When the recommended size is
    the trial's own, its recorded shape is pinned (``model.d_model`` etc., no ``model.params``),
    so the tree builds the model that trained. At another size the trial's own design is kept:
    a trial sized by ``model.params`` gets the new count (optimix's shape rule picks the shape);
    a trial given its shape keeps its depth and heads, and its width becomes the one nearest the
    new count (``scaled_shape``; the rule's coarser widths missed counts by up to 20%).
    Tokens are fixed (``train.tokens``), never derived from ``train.flops``.
    """
    from optimix.core.config import TrialConfig

    tree: dict[str, Any] = {}
    for key, text in params.items():
        if key.split(".")[0] not in TrialConfig.model_fields:
            continue
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _param_value(text)
    tree.setdefault("mixture", {})["rare_freq"] = config.rare_freq
    train = tree.setdefault("train", {})
    train["tokens"], train["flops"] = max(1, round(config.tokens)), None
    model = tree.setdefault("model", {})
    if same_size(config.params, recorded_params):
        shape = _recorded_shape(params)
    else:
        sized_by_rule = params.get("model.params", "None") != "None"
        shape = None if sized_by_rule else scaled_shape(params, config.params)
        if shape is None:
            model["params"] = max(1000, round(config.params))
    if shape is not None:
        model.update(shape, params=None)
    tree.pop("search", None)
    return tree


_SHAPE_KEYS = ("d_model", "n_layer", "n_head", "d_ff")


def _recorded_shape(params: Mapping[str, str]) -> dict[str, int] | None:
    """The shape a trial built (its ``shape.*`` params), or None for records without them."""
    try:
        return {name: int(params[f"shape.{name}"]) for name in _SHAPE_KEYS}
    except (KeyError, ValueError):
        return None


def scaled_shape(params: Mapping[str, str], target: float) -> dict[str, int] | None:
    """A recorded trial's shape at ``target`` params: the same depth, heads and embeddings; the
    width (a multiple of twice the heads: an even head dimension) nearest ``target`` with the MLP width by the trial's rule
    (the default 8/3, else scaled with the width); then the MLP width moved (by at most a
    quarter) to meet ``target``, which the widths' steps alone miss by up to 8% in a 20K model.
    None when the trial recorded no shape."""
    from optimix.core.flops import param_counts
    from optimix.trial.model import default_d_ff

    shape = _recorded_shape(params)
    n_vocab = params.get("shape.n_vocab", "")
    if shape is None or not n_vocab.isdigit():
        return None
    d0, d_ff0, heads, layers = shape["d_model"], shape["d_ff"], shape["n_head"], shape["n_layer"]
    tie = params.get("model.tie_embeddings") == "True"

    def count(d_model: int, d_ff: int) -> int:
        return param_counts(d_model, layers, d_ff, int(n_vocab), tie)[0]

    best: tuple[float, int, int] | None = None
    step = 2 * heads  # rotary embeddings need an even head dimension
    for d_model in range(step * math.ceil(8 / step), 16385, step):
        d_ff = default_d_ff(d_model) if d_ff0 == default_d_ff(d0) else max(8, round(d_ff0 * d_model / d0))
        gap = abs(math.log(count(d_model, d_ff) / target))
        if best is None or gap < best[0]:
            best = (gap, d_model, d_ff)
        if count(d_model, d_ff) > target:  # counts grow with the width: nothing wider is nearer
            break
    _, d_model, d_ff = best
    per_unit = 3 * d_model * layers  # params per unit of MLP width (three d_model x d_ff matrices)
    moved = d_ff + round((target - count(d_model, d_ff)) / per_unit)
    d_ff = min(max(moved, math.ceil(0.75 * d_ff), 8), math.floor(1.25 * d_ff))
    return {**shape, "d_model": d_model, "d_ff": d_ff}


def same_size(params: float, recorded_params: float) -> bool:
    """Whether a recommended size is the recorded trial's own (to 0.1%): verify keeps its shape."""
    return abs(math.log(params / recorded_params)) <= 1e-3


def _param_value(text: str) -> Any:
    """A logged param's value: ``None``, a list or mapping (JSON, or YAML flow as in
    ``['facts']``), else the text itself.

    The typed config reads the text (``"64"`` as 64, ``"False"`` as False where those are the
    field's types), so a string field keeps its text whatever it looks like (``"on"``, ``"1"``).
    """
    from optimix.core.config import SpaceError
    from optimix.core.space import parse_override

    if text == "None":
        return None
    if text.startswith(("[", "{")):
        try:
            value = parse_override(f"value={text}")[1]
        except SpaceError:
            return text
        return value if isinstance(value, list | dict) else text
    return text


def nearest_trial(table: TrialTable, config: Config) -> int:
    """Row of the usable trial nearest to ``config``: nearest in size (in log; sizes within
    ``same_size`` of the nearest count as equal), then in frequency, then in tokens. Where a
    search varied more than these (a learning rate, a seed), the trial nearest the
    recommendation lends its other settings."""
    rows = table.usable_rows()
    if not len(rows):
        raise PlanError("--verify: no finished trial to take the config from")
    size = np.abs(np.log(table.params[rows] / config.params))
    rows = rows[size <= size.min() + 1e-3]
    freq = np.abs(np.log(table.rare_freq[rows] / config.rare_freq))
    tokens = np.abs(np.log(table.tokens[rows] / config.tokens))
    return int(rows[np.lexsort((tokens, freq))[0]])


def record_of(trials: Iterable[Any], run_id: str) -> Any:
    """The trial record of ``run_id``."""
    for trial in trials:
        if trial.run_id == run_id:
            return trial
    raise PlanError(f"--verify: run {run_id} is in the trial table but not among the search's trials")
