"""What the frontier sampler believes along its own trajectories on a public table.

A diagnostic for ``public_bench.py`` (docs/benchmarks/public_bench.md, the reading on the
cheap corner): it runs optimix's search on one problem exactly as the benchmark does and looks
inside the sampler, so it reads the sampler's internals (``_encode``, ``_score``, ...) as no
other module may.

``calibration``: at each proposal, the quality GP (refitted on the same configs) predicts the
proposed config; the table prints how far the config's true mean fell from that prediction,
in predicted standard deviations (z), and where in the table's log-cost range the proposals
fell. ``geometry``: at one proposal, 3,000 random configs scored as the sampler scores them,
by position in the log-cost range: the GP's prediction against the true mean, the expected
gain, the price**alpha and the score.

    python benchmarks/frontier_probe.py calibration nb201/cifar10/train_time --seeds 0 1 2
    python benchmarks/frontier_probe.py geometry nb201/cifar10/train_time --seeds 0 --at 5 15 25
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import public_bench as pb  # noqa: E402

BINS = [(0.0, 0.2), (0.2, 0.4), (0.4, 0.55), (0.55, 0.7), (0.7, 0.85), (0.85, 1.01)]


class Stop(Exception):
    """Raised by the geometry probe once it has looked: the search ends there."""


def probed(problem: pb.Problem, mode: str, at: int):
    """``FrontierSampler`` with a look after each proposal (``mode``), and the list it fills."""
    from optuna.trial import TrialState

    from optimix.search import frontier_sampler as fs
    from optimix.search.gp import GP, HalfRank

    seen_rows: list[tuple] = []
    lc = np.log10(problem.cost)
    lo, hi = float(lc.min()), float(lc.max())

    def position(point) -> float:
        return (math.log10(problem.cost_of(point)) - lo) / (hi - lo)

    class Probe(fs.FrontierSampler):
        calls = 0

        def sample_relative(self, study, trial, search_space):
            out = super().sample_relative(study, trial, search_space)
            Probe.calls += 1
            if not out:
                return out
            if mode == "calibration":
                # The GP refitted here as ``acquisition`` fits it: ``acquisition`` itself would
                # draw from the sampler's generator and change the trajectory being probed.
                done = fs._by_config(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), 0, 1.0)
                x = np.array([self._encode(g.params) for g in done])
                y = np.array([g.mean for g in done])
                warp = HalfRank(y)
                gp = GP.fit(x, warp(y), self._prior_sd, fs._seed_noise(done), self._groups)
                mean, sd = gp.predict(np.array([self._encode(out)]))
                true = problem.true_quality()[problem.rows[problem.key(out)]]
                seen_rows.append((float((warp(np.array([true]))[0] - mean[0]) / sd[0]), float(sd[0]), position(out)))
            elif Probe.calls == at:
                trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                seen_rows.extend(self._look(self.acquisition(trials)))
                raise Stop
            return out

        def _look(self, acq):
            rng = np.random.default_rng(1)
            points = [{n: d.at(float(rng.random())) for n, d in self._dims.items()} for _ in range(3000)]
            points, score = self._score(self._new_configs(points, acq), acq)
            mean, _ = acq.gp.predict(np.array([self._encode(p) for p in points]))
            price = self.price(np.array([self._cost(p) for p in points]), acq.n_left) ** acq.alpha
            true = problem.true_quality()[[problem.rows[problem.key(p)] for p in points]]
            return [(position(p), m, t, s * pr, pr, s, acq.alpha)
                    for p, m, t, s, pr in zip(points, mean, true, score, price, strict=True)]

    return Probe, seen_rows


def run(problem: pb.Problem, mode: str, seed: int, at: int = 0) -> tuple[float | None, list[tuple]]:
    from optimix.search import frontier_sampler as fs

    original = fs.FrontierSampler
    fs.FrontierSampler, rows = probed(problem, mode, at)
    try:
        return pb.run_one(problem, pb.Scale.of(problem), "optimix", seed, 25, 2.0)["regret"], rows
    except Stop:
        return None, rows
    finally:
        fs.FrontierSampler = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["calibration", "geometry"])
    parser.add_argument("problem")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--at", nargs="+", type=int, default=[5, 15, 25], help="geometry: the proposals to look at")
    args = parser.parse_args()
    pb._one_thread()
    problem = pb.load_problem(args.problem)
    if args.mode == "calibration":
        print(f"{'seed':>4} {'regret':>7} {'proposals':>9} {'mean z':>7} {'|z|>1':>6} {'|z|>2':>6} "
              f"{'median sd':>9} {'pos<0.3':>7} {'pos>0.7':>7}")
        for seed in args.seeds:
            regret, rows = run(problem, "calibration", seed)
            z, sd, pos = (np.array(c) for c in zip(*rows, strict=True))
            print(f"{seed:>4} {regret:>7.4f} {len(z):>9} {z.mean():>+7.2f} {np.mean(abs(z) > 1):>6.2f} "
                  f"{np.mean(abs(z) > 2):>6.2f} {np.median(sd):>9.3f} {np.mean(pos < 0.3):>7.2f} {np.mean(pos > 0.7):>7.2f}")
        return
    print(f"{'seed':>4} {'at':>3} {'alpha':>5} {'log-cost pos':>12} {'n':>5} {'predicted':>9} {'true':>6} "
          f"{'gain':>9} {'price^a':>8} {'score max':>9}")
    for seed in args.seeds:
        for at in args.at:
            _, rows = run(problem, "geometry", seed, at)
            pos, mean, true, gain, price, score, alpha = (np.array(c) for c in zip(*rows, strict=True))
            for a, b in BINS:
                m = (pos >= a) & (pos < b)
                if m.any():
                    print(f"{seed:>4} {at:>3} {alpha[0]:>5.2f} {f'{a:.2f}-{min(b, 1.0):.2f}':>12} {m.sum():>5} "
                          f"{np.median(mean[m]):>9.3f} {np.median(true[m]):>6.3f} {np.median(gain[m]):>9.2e} "
                          f"{np.median(price[m]):>8.3g} {score[m].max():>9.2e}")


if __name__ == "__main__":
    main()
