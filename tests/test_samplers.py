"""Search dimensions become Optuna distributions in one place; every sampler proposes from them."""

from __future__ import annotations

import optuna
import pytest

from optimix.search import cheapest_flops, distributions, grid_size, make_sampler, trial_flops
from optimix.space import build_space


def space_tree(sampler: str) -> dict:
    return {
        "name": "s",
        "tasks": {"copy": {"kind": "copy", "length": 3, "alphabet": 8},
                  "facts": {"kind": "facts", "n_facts": 20, "alphabet": 16}},
        "mixture": {"rare_task": "facts",
                    "rare_freq": {"dist": "loguniform", "low": 0.001, "high": 0.1, "grid": [0.001, 0.01, 0.1]},
                    "delivery": {"dist": "choice", "values": ["even", "bursts"]}},
        "model": {"d_model": {"dist": "int", "low": 16, "high": 64, "step": 16}, "n_layer": 1, "n_head": 2},
        "train": {"tokens": 10_000, "lr": {"dist": "uniform", "low": 0.001, "high": 0.01, "grid": [0.003]}},
        "search": {"sampler": sampler},
    }


def test_distributions_match_the_dimensions():
    dists = distributions(build_space(space_tree("tpe")))
    assert dists["mixture.rare_freq"] == optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    assert dists["mixture.delivery"] == optuna.distributions.CategoricalDistribution(["even", "bursts"])
    assert dists["model.d_model"] == optuna.distributions.IntDistribution(16, 64, step=16)
    assert dists["train.lr"] == optuna.distributions.FloatDistribution(0.001, 0.01)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2", "random", "grid"])
def test_every_sampler_proposes_valid_multi_objective_points(sampler):
    space = build_space(space_tree(sampler))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, 0))
    dists = distributions(space)
    seen = []
    for i in range(8):
        trial = study.ask(dists)
        config = space.resolve(trial.params)  # every proposal is a valid trial config
        seen.append(tuple(sorted(trial.params.items())))
        study.tell(trial, [i / 8, trial_flops(space, trial.params)])
        assert config.mixture.rare_freq == trial.params["mixture.rare_freq"]
    assert len(set(seen)) > 1
    if sampler == "grid":
        assert grid_size(space) == 3 * 2 * 4 * 1


def test_same_seed_same_proposals():
    space = build_space(space_tree("tpe"))

    def proposals():
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, 7))
        out = []
        for _ in range(12):
            trial = study.ask(distributions(space))
            study.tell(trial, [trial.params["mixture.rare_freq"], trial.params["model.d_model"]])
            out.append(trial.params)
        return out

    assert proposals() == proposals()


def test_cheapest_trial_is_the_smallest_model():
    space = build_space(space_tree("tpe"))
    assert cheapest_flops(space) == trial_flops(space, {"model.d_model": 16})
    assert trial_flops(space, {"model.d_model": 64}) > cheapest_flops(space)
