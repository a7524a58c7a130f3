"""Sweep planning: grids, random samples, the winner, and clear refusals."""

from __future__ import annotations

import pytest

from factorflow.engine.sweeps import best_candidate, plan_candidates

pytestmark = pytest.mark.unit


def test_a_grid_is_every_combination_in_a_stable_order():
    grid = plan_candidates({"reg": [0.01, 0.1], "rank": [4, 8, 16]})
    assert len(grid) == 6 and grid[0] == {"rank": 4, "reg": 0.01}
    assert {(c["rank"], c["reg"]) for c in grid} == {(r, g) for r in (4, 8, 16) for g in (0.01, 0.1)}


def test_a_random_search_draws_distinct_seeded_samples():
    space = {"rank": [2, 4, 8, 16], "reg": [0.01, 0.03, 0.1]}
    a = plan_candidates(space, search="random", samples=5, seed=3)
    assert len(a) == 5 and len({tuple(sorted(c.items())) for c in a}) == 5
    assert a == plan_candidates(space, search="random", samples=5, seed=3)
    assert a != plan_candidates(space, search="random", samples=5, seed=4)


@pytest.mark.parametrize("space,kwargs,message", [
    ({"rnak": [4]}, {}, "unknown setting 'rnak'"),
    ({"rank": []}, {}, "'rank' must be a non-empty list"),
    ({"rank": "8"}, {}, "'rank' must be a non-empty list"),
    ({}, {}, "search space must map"),
    ({"rank": [1, 2]}, {"search": "bayes"}, "search must be one of"),
    ({"rank": [1, 2]}, {"search": "random", "samples": 3}, "1 <= samples <= 2"),
    ({"rank": list(range(1, 11)), "reg": list(range(10))}, {}, "100 candidates"),
])
def test_bad_spaces_are_refused_by_name(space, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_candidates(space, **kwargs)


def test_the_best_candidate_has_the_lowest_finite_validation_rmse():
    assert best_candidate([{"valid_rmse": 0.9}, {"valid_rmse": float("nan")},
                           {"valid_rmse": 0.8}, {"valid_rmse": 0.8}]) == 2
    with pytest.raises(ValueError, match="valid_fraction > 0"):
        best_candidate([{"valid_rmse": None}])
