"""Does the frontier sampler collapse onto one cheap model? Trials per model actually built.

Issue 28's evidence. Reads finished searches of a space (each ``optimix search SPACE
--storage-path DIR``, one DIR per search) and prints, per search: the trials per effective
model (the shape the trial built: ``d_model x n_layer``, and its parameter count), the
near-repeats (two trials that built one model at frequencies within ``NEAR`` of the
frequency range, as the sampler scales it), the best accuracy and the hypervolume of the
final results in (accuracy up, log10 FLOPs down), bounded by accuracy 0 and ``--reference-flops``
(default: the space's ``search.budget_flops``, else 1e12).

    python benchmarks/collapse.py SPACE.yaml DIR [DIR ...] [--reference-flops F]
        [--fixture tests/data/NAME.json]

``--fixture`` writes the first search's Optuna trials (point, state, values, learning curve) as
JSON, for tests that replay what a real search saw (``tests/test_frontier_collapse.py``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from optimix.core import pareto
from optimix.core.budget import Proposal
from optimix.core.config import TrialConfig
from optimix.core.metrics import CURVE_ATTR
from optimix.core.space import Space, load_space
from optimix.search.frontier_sampler import NEAR
from optimix.search.ledger import SearchState
from optimix.search.proposals import Proposals


def trials_of(storage: Path, experiment: str) -> list:
    """The finished and pruned Optuna trials of the latest search under ``storage``."""
    import optuna
    from optuna.trial import TrialState

    state = SearchState.latest(storage, experiment)
    study = optuna.load_study(study_name=experiment, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(state.journal))))
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def model_name(proposal: Proposal) -> str:
    shape = proposal.plan.shape
    return f"{shape.d_model}x{shape.n_layer} ({shape.params:,} params)"


def near_repeats(space: Space, built: list[tuple[str, dict]]) -> int:
    """Configs (a replicate's seeds are one) that built a model an earlier config built, with
    every other dimension within ``NEAR`` of its range (log scale where the dimension is) of
    that config's: what the sampler should never propose."""
    def close(a: dict, b: dict) -> bool:
        for name, dim in space.dimensions.items():
            if TrialConfig.meaning(name).as_shape:
                continue
            if dim.dist == "choice" and a[name] != b[name]:
                return False
            if dim.dist != "choice" and abs(dim.unit(a[name]) - dim.unit(b[name])) >= NEAR:
                return False
        return True

    configs = list({json.dumps(p, sort_keys=True): (m, p) for m, p in built}.values())
    return sum(any(m == n and close(p, q) for n, q in configs[:i]) for i, (m, p) in enumerate(configs))


def summary(space: Space, trials: list, reference_flops: float) -> dict:
    proposals = Proposals(space)
    built = [(model_name(proposals.get(t.params)), t.params) for t in trials]
    done = [t for t in trials if t.values is not None]
    values = np.array([[t.values[0], math.log10(proposals.cost(t.params))] for t in done])
    return {
        "trials": len(trials),
        "models": Counter(m for m, _ in built).most_common(),
        "near_repeats": near_repeats(space, built),
        "best": max((float(t.values[0]) for t in done), default=math.nan),
        "hypervolume": pareto.hypervolume_2d(values, ["max", "min"], [0.0, math.log10(reference_flops)])
        if len(done) else 0.0,
        "flops": sum(proposals.cost(t.params) for t in trials),
    }


def fixture(trials: list) -> list[dict]:
    return [{"params": t.params, "state": t.state.name, "values": t.values,
             "curve": t.user_attrs.get(CURVE_ATTR, [])} for t in trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--reference-flops", type=float, default=None)
    parser.add_argument("--fixture", default=None)
    args = parser.parse_args()
    space = load_space(args.space)
    reference = args.reference_flops or space.base.search.budget_flops or 1e12
    for i, d in enumerate(args.dirs):
        trials = trials_of(Path(d), space.base.name)
        s = summary(space, trials, reference)
        print(f"{d}: {s['trials']} trials, {s['flops']:.3g} FLOPs, best {s['best']:.3f}, "
              f"hypervolume {s['hypervolume']:.3f}, near-repeats {s['near_repeats']}")
        for model, n in s["models"]:
            print(f"    {n:3d}  {model}")
        if args.fixture and i == 0:
            lines = ",\n ".join(json.dumps(t) for t in fixture(trials))
            Path(args.fixture).write_text(f"[{lines}]\n")


if __name__ == "__main__":
    main()
