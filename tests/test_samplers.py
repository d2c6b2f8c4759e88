"""Search dimensions become Optuna distributions in one place; every sampler proposes from them."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from optimix.core.space import Dimension, build_space
from optimix.search import cheapest_flops, distributions, grid_size, make_sampler, trial_flops

from conftest import tiny_space


def space_tree(sampler: str) -> dict:
    return tiny_space("s", tasks={"copy": {}, "facts": {}},
                      mixture={"rare_freq": {"dist": "loguniform", "low": 0.001, "high": 0.1,
                                             "grid": [0.001, 0.01, 0.1]},
                               "delivery": {"dist": "choice", "values": ["even", "bursts"]}},
                      model={"d_model": {"dist": "int", "low": 16, "high": 64, "step": 16}},
                      train={"tokens": 10_000, "batch_size": None, "threads": None,
                             "lr": {"dist": "uniform", "low": 0.001, "high": 0.01, "grid": [0.003]}},
                      eval=None, search={"sampler": sampler, "trials": None, "max_concurrent": None,
                                         "cpus_per_trial": None})


def test_distributions_match_the_dimensions():
    dists = distributions(build_space(space_tree("tpe")))
    assert dists["mixture.rare_freq"] == optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    assert dists["mixture.delivery"] == optuna.distributions.CategoricalDistribution(["even", "bursts"])
    assert dists["model.d_model"] == optuna.distributions.IntDistribution(16, 64, step=16)
    assert dists["train.lr"] == optuna.distributions.FloatDistribution(0.001, 0.01)


@pytest.mark.parametrize("sampler", ["auto", "frontier", "tpe", "gp", "nsga2", "random", "grid"])
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


@pytest.mark.parametrize("entry, u, value", [
    ({"dist": "uniform", "low": 1.0, "high": 3.0}, 0.5, 2.0),
    ({"dist": "uniform", "low": 0.0, "high": 1.0, "step": 0.6}, 1.0, 0.6),  # the last step within high
    ({"dist": "loguniform", "low": 0.001, "high": 0.1}, 0.5, 0.01),
    ({"dist": "int", "low": 16, "high": 70, "step": 16}, 1.0, 64),
    ({"dist": "int", "low": 16, "high": 64, "step": 16}, 0.0, 16),
    ({"dist": "int", "low": 1, "high": 1000, "log": True}, 0.5, 32),
    ({"dist": "choice", "values": ["a", "b", "c"]}, 0.0, "a"),
    ({"dist": "choice", "values": ["a", "b", "c"]}, 0.5, "b"),
    ({"dist": "choice", "values": ["a", "b", "c"]}, 1.0, "c"),
])
def test_a_unit_number_maps_to_a_value_on_the_dimension(entry, u, value):
    got = Dimension.model_validate(entry).at(u)
    assert got == pytest.approx(value) and type(got) is type(value)


@pytest.mark.parametrize("entry", [{"dist": "uniform", "low": -2.0, "high": 5.0},
                                   {"dist": "loguniform", "low": 1e-4, "high": 1.0},
                                   {"dist": "int", "low": 1, "high": 1_000_000, "log": True}])
def test_unit_is_the_inverse_of_at(entry):
    dim = Dimension.model_validate(entry)
    for u in np.linspace(0, 1, 11):
        back = dim.unit(dim.at(u))
        assert back == pytest.approx(u, abs=0.01 if dim.dist == "int" else 1e-9)


@pytest.mark.filterwarnings("ignore:The distribution is specified by")
def test_every_value_at_draws_lies_in_the_optuna_distribution():
    # The frontier sampler and the first points draw with Dimension.at, Optuna asks from the
    # distributions: a step that does not divide the range must not put a draw beyond them.
    tree = space_tree("tpe")
    tree["model"]["d_model"]["high"] = 70  # Optuna's range ends at 64, the last step
    tree["train"]["lr"]["step"] = 0.004  # at 0.009
    space = build_space(tree)
    dists = distributions(space)
    for u in np.linspace(0, 1, 41):
        for key, dim in space.dimensions.items():
            value, dist = dim.at(u), dists[key]
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert value in dist.choices
                continue
            assert dist.low <= value <= dist.high, (key, u, value)
            if dist.step:
                k = (value - dist.low) / dist.step
                assert k == pytest.approx(round(k)), (key, u, value)


def test_cheapest_trial_is_the_smallest_model():
    space = build_space(space_tree("tpe"))
    assert cheapest_flops(space) == trial_flops(space, {"model.d_model": 16})
    assert trial_flops(space, {"model.d_model": 64}) > cheapest_flops(space)


def test_frontier_gain_is_the_area_a_new_point_adds():
    from optimix.search.acquisition import expected_gain

    # Front: quality 0.5 from log cost 1 on; reference 3. A sure point of quality 0.8 at
    # log cost 0 adds 0.8 x 1 (below the front's first cost) + 0.3 x 2 (above its 0.5).
    gain = expected_gain(np.array([0.8, 0.8, 0.4]), np.zeros(3), np.array([0.0, 2.0, 1.0]),
                         [(1.0, 0.5)], 3.0)
    assert gain == pytest.approx([1.4, 0.3, 0.0])
    # Uncertainty can only add expected gain where the sure value adds none.
    assert expected_gain(np.array([0.4]), np.array([0.2]), np.array([1.0]), [(1.0, 0.5)], 3.0)[0] > 0


def test_a_candidates_gain_does_not_depend_on_the_candidates_beside_it():
    # A minimised metric, sign flipped: the front at -0.5 from log cost 1 on, reference 3.
    # A sure -0.4 at log cost 0 lifts the staircase by 0.1 over 3 log-cost units, whatever
    # it is scored beside: a poor candidate (-3) must not lower the area's floor for it.
    from optimix.search.acquisition import expected_gain

    alone = expected_gain(np.array([-0.4]), np.zeros(1), np.array([0.0]), [(1.0, -0.5)], 3.0)
    beside = expected_gain(np.array([-0.4, -3.0]), np.zeros(2), np.array([0.0, 0.5]), [(1.0, -0.5)], 3.0)
    assert alone == pytest.approx([0.3]) and beside == pytest.approx([0.3, 0.0])


def test_the_frontier_sampler_spends_on_what_gains_most_per_flop():
    # Quality rises with rare_freq at every size; FLOPs grow with d_model. Once it has
    # seen that, the frontier sampler proposes cheap models at high frequencies.
    tree = space_tree("frontier")
    tree["mixture"]["delivery"] = "even"
    tree["train"]["lr"] = 0.003
    space = build_space(tree)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, 0))
    dists = distributions(space)
    proposals = []
    for _ in range(14):
        trial = study.ask(dists)
        f, d = trial.params["mixture.rare_freq"], trial.params["model.d_model"]
        quality = min(1.0, (np.log10(f) + 3) / 2 * (0.5 + d / 128))
        flops = trial_flops(space, trial.params)
        trial.set_user_attr("optimix.curve", [[float(np.log10(flops)), quality]])
        study.tell(trial, [quality, float(np.log10(flops))])
        proposals.append((f, d))
    late = proposals[6:]
    assert np.median([f for f, _ in late]) > 0.03  # learnt: frequency is free
    assert np.median([d for _, d in late]) <= 32  # and the small models are cheap


def test_an_effective_config_is_what_the_trial_trains():
    from optimix.search import effective_key

    space = build_space(space_tree("tpe"))
    point = {"mixture.rare_freq": 0.1, "mixture.delivery": "even", "model.d_model": 32, "train.lr": 0.003}
    key = effective_key(space, point)
    # A frequency equal to four digits is one frequency; 2% apart is another.
    assert effective_key(space, {**point, "mixture.rare_freq": 0.09998}) == key
    assert effective_key(space, {**point, "mixture.rare_freq": 0.098}) != key
    # Burst settings change nothing in an even delivery, and everything in bursts.
    tree = space_tree("tpe")
    tree["mixture"]["burst_duty"] = {"dist": "uniform", "low": 0.2, "high": 0.5}
    bursty = build_space(tree)
    assert effective_key(bursty, {**point, "mixture.burst_duty": 0.2}) == \
        effective_key(bursty, {**point, "mixture.burst_duty": 0.5})
    bursts = {**point, "mixture.delivery": "bursts", "mixture.rare_freq": 0.01}
    assert effective_key(bursty, {**bursts, "mixture.burst_duty": 0.2}) != \
        effective_key(bursty, {**bursts, "mixture.burst_duty": 0.5})


def _frontier_study(tree: dict, quality, n: int, seed: int = 0):
    """``n`` trials of the frontier sampler on ``quality(params)``; the study and the trials' keys."""
    from optimix.search import effective_key

    space = build_space(tree)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, seed))
    dists = distributions(space)
    keys = []
    for _ in range(n):
        trial = study.ask(dists)
        q = quality(trial.params)
        flops = trial_flops(space, trial.params)
        trial.set_user_attr("optimix.curve", [[float(np.log10(flops)), q]])
        study.tell(trial, [q, float(np.log10(flops))])
        keys.append(effective_key(space, trial.params))
    return study, keys


def test_the_frontier_sampler_never_proposes_a_model_it_has_trained():
    # Quality saturates at the top of the frequency range: the best point is at its end,
    # where a sampler modelling raw proposals keeps landing on the same frequency.
    tree = space_tree("frontier")
    tree["mixture"]["delivery"] = "even"
    tree["train"]["lr"] = 0.003
    tree["model"]["d_model"] = {"dist": "choice", "values": [16, 32]}
    tree["search"]["trials"] = 24
    study, keys = _frontier_study(tree, lambda p: min(1.0, p["mixture.rare_freq"] * 20), 24)
    assert len(set(keys)) == len(keys)


def test_the_frontier_sampler_looks_beyond_a_flat_cheap_corner():
    # The issue-14 trap: the smallest model sits at 0.1 whatever the frequency; a larger one
    # at a high frequency reaches 0.6. Gain per FLOP alone keeps buying the cheap corner.
    tree = space_tree("frontier")
    tree["mixture"]["delivery"] = "even"
    tree["train"]["lr"] = 0.003
    tree["model"]["d_model"] = {"dist": "choice", "values": [16, 32, 64]}
    tree["search"]["trials"] = 16

    def quality(p):
        if p["model.d_model"] == 16 or p["mixture.rare_freq"] < 0.03:
            return 0.1
        return 0.6

    for seed in range(3):
        study, _ = _frontier_study(tree, quality, 16, seed)
        assert max(t.values[0] for t in study.trials) == 0.6, seed


def test_the_first_points_leave_most_of_a_small_budget_to_the_sampler():
    from optimix.search.proposals import (
        START_SHARE,
        n_startup,
        startup_design,
        startup_points,
        startup_trials,
    )

    tree = space_tree("frontier")
    tree["mixture"]["delivery"] = "even"
    tree["train"]["lr"] = 0.003
    tree["search"]["trials"] = 40
    space = build_space(tree)
    design = startup_design(space, 10, 0)
    costs = [trial_flops(space, p) for p in design]
    assert len(set(costs)) > 1  # the design spans the model sizes
    tree["search"]["budget_flops"] = 3 * sum(costs) / 4  # the whole design would take far more than a third
    tight = build_space(tree)
    start = startup_points(tight, 0)
    spent = [trial_flops(tight, p) for p in start]
    assert 1 <= len(start) < len(design)
    assert spent == sorted(spent) and sum(spent) <= START_SHARE * tight.base.search.budget_flops
    assert n_startup(tight, 0) == max(3, len(start))
    tree["search"]["budget_flops"] = None  # without a budget, the whole design
    free = build_space(tree)
    assert startup_points(free, 0) == startup_design(free, startup_trials(free), 0)


def simplex_tree(sampler: str) -> dict:
    """A whole bulk mixture searched: three tasks' weights on the simplex, beside a rare share."""
    tree = space_tree(sampler)
    tree["tasks"]["sort"] = {"kind": "sort", "length": 3, "alphabet": 8}
    tree["tasks"]["reverse"] = {"kind": "reverse", "length": 3, "alphabet": 8}
    tree["mixture"]["weights"] = {"dist": "simplex", "values": ["copy", "sort", "reverse"]}
    return tree


@pytest.mark.parametrize("sampler", ["auto", "frontier", "tpe", "gp", "nsga2", "random"])
def test_simplex_proposals_sum_to_one(sampler):
    space = build_space(simplex_tree(sampler))
    assert {k for k in space.dimensions if k.startswith("mixture.weights.")} == {
        "mixture.weights.copy", "mixture.weights.sort", "mixture.weights.reverse"}
    assert space.base.mixture.weights == pytest.approx({"copy": 1 / 3, "sort": 1 / 3, "reverse": 1 / 3})
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(space, 0))
    dists = distributions(space)
    spread = []
    for i in range(12):
        trial = study.ask(dists)
        weights = space.resolve(trial.params).mixture.weights
        assert abs(sum(weights.values()) - 1) <= 1e-9 and min(weights.values()) >= 0
        spread.append(weights["copy"])
        study.tell(trial, [i / 12, trial_flops(space, trial.params)])
    assert max(spread) - min(spread) > 0.1  # the samplers move over the simplex


def test_simplex_weights_drive_the_mixture():
    from optimix.trial.tasks import build_tasks

    space = build_space(simplex_tree("random"))
    config = space.resolve({"mixture.weights.copy": 0.9, "mixture.weights.sort": 0.0,
                            "mixture.weights.reverse": 0.5})
    weights = build_tasks(config).weights
    assert weights["sort"] == 0.0 and weights["copy"] > weights["reverse"] > 0
    assert sum(weights[n] for n in ("copy", "sort", "reverse")) == pytest.approx(1.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"values": ["copy"]}, "mixture.weights.values: a simplex needs two or more distinct task names"),
    ({"values": ["copy", "sort", "reverse"], "low": 0}, "mixture.weights.low: a simplex takes only values"),
    ({"values": ["copy", "sort"]}, "mixture.weights: weigh each non-rare task"),
])
def test_bad_simplexes_name_their_key(change, message):
    from optimix.core.config import SpaceError

    tree = simplex_tree("random")
    tree["mixture"]["weights"] = {"dist": "simplex", **change}
    with pytest.raises(SpaceError, match="^" + message):
        build_space(tree)
    if change.get("values") == ["copy", "sort", "reverse"]:
        return
    grid = simplex_tree("grid")
    with pytest.raises(SpaceError, match="^mixture.weights: the grid sampler cannot walk a simplex"):
        build_space(grid)


def test_the_frontier_sampler_weighs_its_gain_by_the_chance_of_meeting_the_constraints():
    """Trials at the small width miss an outcome constraint, the others meet it: the sampler's
    GP over the stored constraint values puts a low chance of meeting it on small-width
    candidates and a high one on wide ones, and its frontier leaves the misses out."""
    from optimix.core.metrics import CONSTRAINT_ATTR
    from optimix.search.acquisition import feasibility
    from optimix.search.frontier_sampler import _met

    tree = space_tree("frontier")
    tree["search"]["constraints"] = ["acc/copy >= 0.5"]
    space = build_space(tree)
    sampler = make_sampler(space, 0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = distributions(space)
    for _ in range(10):
        trial = study.ask(dists)
        wide = trial.params["model.d_model"] >= 48
        trial.set_user_attr(CONSTRAINT_ATTR, [-0.3 if wide else 0.4])  # <= 0: met
        flops = trial_flops(space, trial.params)
        trial.set_user_attr("optimix.curve", [[float(np.log10(flops)), 0.5]])
        study.tell(trial, [0.9 if not wide else 0.5, float(np.log10(flops))])
    done = study.get_trials(deepcopy=False)
    assert [_met(t, 1) for t in done] == [t.params["model.d_model"] >= 48 for t in done]
    narrow = {**done[0].params, "model.d_model": 16}
    wide = {**done[0].params, "model.d_model": 64}
    p = feasibility(sampler._constraint_models(done), np.array([sampler._encode(narrow), sampler._encode(wide)]))
    assert p[0] < 0.2 < 0.8 < p[1]
    assert all(_met(t, 0) for t in done)  # without constraints every trial counts


@pytest.mark.parametrize("objectives", [
    ["acc/facts:max", "train_flops:min"],
    ["acc/facts:max", "acc/copy:max", "train_flops:min"],
])
@pytest.mark.parametrize("sampler", ["auto", "gp", "tpe", "nsga2"])
def test_samplers_learn_from_constraints_with_several_objectives(sampler, objectives):
    """Told as a search tells them (``searcher.tell``), outcomes with an outcome constraint
    reach each sampler that takes constraints, past its first points: Optuna's GPSampler takes
    constraints with several objectives only from Optuna 4.5 on (4.4 refuses them)."""
    from optimix.core.entry import LedgerEntry
    from optimix.search.study import tell

    tree = space_tree(sampler)
    tree["search"].update(objectives=objectives, constraints=["acc/copy >= 0.5"], startup_trials=3)
    space = build_space(tree)
    if sampler == "auto":  # the sampler the auto pick gives a small search
        assert make_sampler(space, 0).__class__.__name__ == (
            "FrontierSampler" if len(objectives) == 2 else "GPSampler")
    study = optuna.create_study(directions=space.spec.directions, sampler=make_sampler(space, 0))
    dists = distributions(space)
    for i in range(5):
        trial = study.ask(dists)
        space.resolve(trial.params)
        wide = trial.params["model.d_model"] >= 48
        flops = trial_flops(space, trial.params)
        result = {"train_flops": flops, "params": 1e4, "non_embedding_params": 1e4, "tokens": 1e4,
                  "wall_s": 1.0, "train_s": 1.0, "tokens_per_s": 1e4,
                  "accuracy": {"facts": i / 5, "copy": 0.7 if wide else 0.2}, "loss": {}}
        tell(study, trial, LedgerEntry(trial_id=str(i), status="ok", result=result), space.spec)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 5


def test_the_frontier_sampler_hill_climbs_its_score_on_a_categorical_space():
    """Six choices of five values (15,625 configs, as NAS-Bench-201's cells): a handful of
    random candidates seldom holds the best, so the proposal is climbed from the best of them
    one dimension at a time. It scores at least as high as every drawn candidate, and no
    one-dimension change of it scores higher (a local best of the sampler's own score)."""
    from optimix.search.frontier_sampler import FrontierSampler

    ops = ["none", "skip", "conv1", "conv3", "pool"]
    dims = {f"edge{k}": Dimension(dist="choice", values=ops) for k in range(6)}
    dists = {k: optuna.distributions.CategoricalDistribution(ops) for k in dims}
    weight = {"none": 0.0, "skip": 0.1, "conv1": 0.5, "conv3": 1.0, "pool": 0.2}

    def quality(p):
        return 0.2 + 0.1 * sum(weight[v] for v in p.values()) + 0.05 * (p["edge0"] == "conv3")

    def cost(p):
        return 1.0 + sum(weight[v] for v in p.values())

    sampler = FrontierSampler(dims, dists, 0, True, cost, n_candidates=8, seed=3,
                              key=lambda p: json.dumps(p, sort_keys=True), budget_limit=200.0, n_trials=40,
                              ceiling=1.0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    study.optimize(lambda t: (quality(p := {k: t.suggest_categorical(k, ops) for k in dims}), cost(p)), n_trials=12)
    acq = sampler.acquisition(study.get_trials(deepcopy=False))
    drawn, drawn_score = sampler._score(sampler._new_configs(sampler._candidates(acq.seen), acq), acq)
    climbed, score = sampler._climb(drawn, drawn_score, acq, rounds=50)
    best = climbed[int(np.argmax(score))]
    assert score.max() >= drawn_score.max() > 0
    _, around = sampler._score(sampler._new_configs(sampler._neighbours(best), acq), acq)
    assert len(around) and around.max() <= score.max()
    assert len(climbed) > len(drawn), "nothing was climbed: the test no longer exercises the climb"


def test_past_two_hundred_configs_the_frontier_sampler_refits_its_gp_only_as_they_grow(monkeypatch):
    """Fitting the GP's hyperparameters factorises the kernel matrix at each optimiser step,
    O(n^3): a search of several hundred trials would spend most of its time there. Below
    ``REFIT[0]`` configs every proposal fits; from there only after the configs grow by
    ``REFIT[1]``, and in between the GP holds the last fit's hyperparameters while it
    conditions on every point."""
    from optimix.search import frontier_sampler as F
    from optimix.search import gp as G

    ops = ["none", "skip", "conv1", "conv3", "pool"]
    dims = {f"edge{k}": Dimension(dist="choice", values=ops) for k in range(6)}
    dists = {k: optuna.distributions.CategoricalDistribution(ops) for k in dims}
    weight = {"none": 0.0, "skip": 0.1, "conv1": 0.5, "conv3": 1.0, "pool": 0.2}
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=5))
    study.optimize(lambda t: (sum(weight[t.suggest_categorical(k, ops)] for k in dims), 1.0), n_trials=250)
    trials = study.get_trials(deepcopy=False)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 250  # one config per trial
    sampler = F.FrontierSampler(dims, dists, 0, True, lambda p: 1.0 + sum(weight[v] for v in p.values()), seed=5)
    fitted = []
    fit = G.GP.fit.__func__
    monkeypatch.setattr(G.GP, "fit", classmethod(lambda cls, x, *a, **k: fitted.append(len(x)) or fit(cls, x, *a, **k)))
    held = {}
    for n in range(F.REFIT[0] - 2, 250):
        held[n] = sampler.acquisition(trials[:n]).gp
    first = F.REFIT[0]
    assert F.REFIT == (200, 1.1) and fitted == [198, 199, 219, 241]  # 219 > 1.1 x 199, 241 > 1.1 x 219
    assert held[218].theta == pytest.approx(held[first - 1].theta)  # held in between ...
    assert len(held[218].x) == 218  # ... conditioned on every config
    assert not np.allclose(held[219].theta, held[218].theta)
