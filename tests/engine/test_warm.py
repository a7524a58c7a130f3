"""Warm start: ids matched across runs, the previous rows aligned and cut to rank, cold fallbacks."""

import json

import jax
import numpy as np
import pytest

from factorflow.engine import FactorModel, FactorParams, TrainConfig, fit
from factorflow.engine.factors import init_params
from factorflow.engine.warm import (
    WarmStart,
    align,
    blend,
    incompatibility,
    match_ids,
    warm_epochs,
    warm_start,
)
from tests.helpers import SMALL, random_params, synthetic

pytestmark = pytest.mark.unit

ADAM = dict(optimizer="adam", rank=3, epochs=8, learning_rate=0.05)


def model_of(n_users=4, n_items=3, rank=2, seed=0, **config):
    """A FactorModel of random params whose training settings say ``rank``."""
    return FactorModel(random_params(n_users, n_items, rank, seed=seed),
                       config={**TrainConfig(rank=rank)._asdict(), **config})


class TestMatchIds:
    @pytest.mark.parametrize("before, now, positions, known", [
        (["a", "b", "c"], ["c", "a", "b"], [2, 0, 1], [True, True, True]),            # reordered
        (["a", "b", "c"], ["b", "new", "a", "zz"], [1, 0, 0, 0], [True, False, True, False]),
        ([30, 10, 20], [20, 40, 30], [2, 0, 0], [True, False, True]),                  # removed 10
        (np.array([7, 8], np.int64), np.array([8, 7, 9], np.int32), [1, 0, 0], [True, True, False]),
        (np.array(["u1", "u2"], object), ["u2"], [1], [True]),                        # object ids
    ], ids=["reordered", "added-strings", "integers", "int-widths", "object"])
    def test_positions_of_known_ids(self, before, now, positions, known):
        got_positions, got_known = match_ids(before, now)
        np.testing.assert_array_equal(got_known, known)
        np.testing.assert_array_equal(got_positions, positions)

    def test_strings_and_integers_match_as_text(self):
        positions, known = match_ids(np.array([1001, 1002]), np.array(["1002", "x"]))
        np.testing.assert_array_equal(known, [True, False])
        assert positions[0] == 1

    def test_empty_sides_match_nothing(self):
        assert not match_ids([], ["a"])[1].any()
        assert match_ids(["a"], [])[1].shape == (0,)


class TestAlign:
    def test_rows_follow_their_ids(self):
        params = random_params(3, 2, 2, seed=1)
        users = match_ids(["a", "b", "c"], ["c", "new", "a"])
        items = match_ids([5, 6], [6, 5, 7])
        out, width = align(params, users, items, 2)
        assert width == 2
        np.testing.assert_array_equal(out.user_factors[0], params.user_factors[2])
        np.testing.assert_array_equal(out.user_factors[1], 0.0)
        np.testing.assert_array_equal(out.user_bias, [params.user_bias[2], 0, params.user_bias[0]])
        np.testing.assert_array_equal(out.item_factors[:2], params.item_factors[[1, 0]])
        np.testing.assert_array_equal(out.item_bias[2], 0.0)
        assert out.mean == params.mean

    def test_a_wider_model_is_cut_to_its_best_rank_r_product(self):
        """A Gibbs model published at width 6 starts a rank-2 fit at the best rank-2
        approximation of its interaction part (Eckart–Young), split symmetrically."""
        params = random_params(8, 7, 6, seed=2)
        rows = match_ids(np.arange(8), np.arange(8)), match_ids(np.arange(7), np.arange(7))
        out, width = align(params, *rows, 2)
        assert width == 2 and out.user_factors.shape == (8, 2) and out.item_factors.shape == (7, 2)
        scores = params.user_factors.astype(np.float64) @ params.item_factors.T
        a, s, bt = np.linalg.svd(scores)
        best = (a[:, :2] * s[:2]) @ bt[:2]
        np.testing.assert_allclose(out.user_factors @ out.item_factors.T, best, atol=1e-4)
        # symmetric split: both sides carry the same energy per column
        np.testing.assert_allclose(np.linalg.norm(out.user_factors, axis=0),
                                   np.linalg.norm(out.item_factors, axis=0), rtol=1e-4)

    def test_a_narrower_model_fills_the_leading_columns(self):
        params = random_params(3, 3, 1, seed=3)
        rows = match_ids([0, 1, 2], [0, 1, 2]), match_ids([0, 1, 2], [0, 1, 2])
        out, width = align(params, *rows, 3)
        assert width == 1
        np.testing.assert_array_equal(out.user_factors[:, 1:], 0.0)


class TestIncompatibility:
    @pytest.mark.parametrize("previous, config, reason", [
        (dict(rank=2), TrainConfig(rank=3), "rank changed (2 -> 3)"),
        (dict(rank=2, loss="squared"), TrainConfig(rank=2, loss="huber"),
         "loss changed ('squared' -> 'huber')"),
    ])
    def test_names_what_changed(self, previous, config, reason):
        assert incompatibility(model_of(**previous), config) == reason

    def test_the_rank_is_the_trained_one_not_the_width(self):
        """A Gibbs model of rank 2 is published wider: its config decides."""
        wide = FactorModel(random_params(4, 3, 6), config=TrainConfig(rank=2)._asdict())
        assert incompatibility(wide, TrainConfig(rank=2)) is None

    def test_a_model_without_settings_or_with_nan(self):
        assert "no training settings" in incompatibility(FactorModel(random_params(2, 2, 2)),
                                                         TrainConfig(rank=2))
        bad = model_of()
        bad.params.user_bias[0] = np.nan
        assert "non-finite" in incompatibility(bad, TrainConfig(rank=2))


class TestWarmStart:
    def test_known_rows_and_one_log_line(self):
        lines = []
        start = warm_start(model_of(), ["a", "b", "c", "d"], [1, 2, 3], ["d", "e", "a"],
                           [3, 4], TrainConfig(rank=2), lines.append, source="prev/")
        assert isinstance(start, WarmStart) and start.source == "prev/" and start.width == 2
        np.testing.assert_array_equal(start.user_known, [True, False, True])
        np.testing.assert_array_equal(start.item_known, [True, False])
        assert lines == ["warm start from prev/: 2 of 3 users and 1 of 2 items known (rank 2, "
                         "2 warm factor columns); 8 of 60 sweeps"]

    @pytest.mark.parametrize("ids, config, reason", [
        ((["a", "b", "c", "d"], [1, 2, 3]), TrainConfig(rank=5), "rank changed (2 -> 5)"),
        ((["a", "b", "c", "d"], [1, 2, 3], ["x"], [9]), TrainConfig(rank=2),
         "no user or item id in common"),
        ((["a", "b"], [1, 2, 3]), TrainConfig(rank=2), "its id maps hold 2 users"),
    ], ids=["rank", "disjoint", "short-id-map"])
    def test_cold_start_with_the_reason(self, ids, config, reason):
        lines = []
        new = ids[2:] or (["a"], [1])
        assert warm_start(model_of(), *ids[:2], *new, config, lines.append) is None
        assert len(lines) == 1 and reason in lines[0] and lines[0].endswith("; cold start")

    def test_warm_epochs(self):
        assert (warm_epochs(60), warm_epochs(1), warm_epochs(9)) == (8, 1, 2)


def test_blend_keeps_cold_rows_and_columns_the_previous_model_lacks():
    previous = FactorParams(np.float32(3.0), np.ones(3, np.float32), np.ones(2, np.float32),
                            np.full((3, 2), 5.0, np.float32), np.full((2, 2), 5.0, np.float32))
    start = WarmStart(previous, np.array([True, False, True]), np.array([False, True]), 1, "p")
    cold = init_params(jax.random.key(0), n_users=3, n_items=2, rank=2, mean=2.5)
    out = blend(start, FactorParams(*(np.asarray(a) for a in cold)))
    assert out.mean == 3.0
    np.testing.assert_array_equal(out.user_bias, [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(out.user_factors[[0, 2], 0], 5.0)
    np.testing.assert_array_equal(out.user_factors[:, 1], np.asarray(cold.user_factors)[:, 1])
    np.testing.assert_array_equal(out.user_factors[1], np.asarray(cold.user_factors)[1])
    kept = blend(start, FactorParams(*(np.asarray(a) for a in cold)), biases=False)
    assert kept.mean == 2.5 and not kept.user_bias.any()


@pytest.mark.parametrize("config", [TrainConfig(rank=3, epochs=6), TrainConfig(**ADAM)],
                         ids=["gibbs", "adam"])
@pytest.mark.parametrize("previous, reason", [
    (dict(rank=2), "rank changed"), (dict(rank=3, loss="huber"), "loss changed"),
], ids=["rank", "loss"])
def test_an_unusable_previous_model_gives_exactly_the_cold_fit(small_data, config, previous,
                                                               reason):
    train, valid = small_data
    ids = np.arange(SMALL["n_users"]), np.arange(SMALL["n_items"])
    old = FactorModel(random_params(*ids[0].shape, *ids[1].shape, previous["rank"]),
                      config={**config._asdict(), **previous})
    lines = []
    request = config._replace(init_from="yesterday/model.npz")
    init = warm_start(old, *ids, *ids, request, lines.append)
    assert init is None and len(lines) == 1 and reason in lines[0]
    warm = fit(train, valid=valid, config=request, init=init, **SMALL)
    cold = fit(train, valid=valid, config=config, **SMALL)
    for name, a, b in zip(FactorParams._fields, warm.params, cold.params):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert warm.warm_start is None and warm.best_epoch == cold.best_epoch


def test_a_gradient_fit_starts_at_the_previous_params(small_data):
    """Epoch 1 of a warm Adam fit starts where the previous fit ended: its loss is a
    fraction of a cold epoch 1's, and its first parameters are the previous ones
    moved by one step."""
    train, valid = small_data
    config = TrainConfig(**{**ADAM, "epochs": 40})
    previous = FactorModel.fit(train, valid=valid, config=config, **SMALL)
    ids = np.arange(SMALL["n_users"]), np.arange(SMALL["n_items"])
    init = warm_start(previous, *ids, *ids, config)
    first = {}
    warm = fit(train, valid=valid, config=config._replace(epochs=2), init=init,
               on_epoch=lambda e, p: first.setdefault(e, p), **SMALL)
    cold = fit(train, valid=valid, config=config._replace(epochs=2), **SMALL)
    assert warm.history[0]["train_loss"] < 0.5 * cold.history[0]["train_loss"]
    assert warm.history[0]["valid_rmse"] < cold.history[-1]["valid_rmse"]
    step = np.abs(np.asarray(first[1].user_factors) - previous.params.user_factors).max()
    assert step <= 2 * ADAM["learning_rate"]  # one Adam step moves a coordinate by ~lr
    assert warm.warm_start == "the previous model"


def test_train_config_stays_json_safe():
    with pytest.raises(ValueError, match="init_from must be a path"):
        fit(synthetic(n=200, **SMALL)[0], config=TrainConfig(init_from=123), **SMALL)
    assert json.loads(json.dumps(TrainConfig(init_from="m/")._asdict()))["init_from"] == "m/"


def test_every_restart_starts_warm(small_data):
    train, valid = small_data
    config = TrainConfig(**{**ADAM, "epochs": 30})
    previous = FactorModel.fit(train, valid=valid, config=config, **SMALL)
    ids = np.arange(SMALL["n_users"]), np.arange(SMALL["n_items"])
    init = warm_start(previous, *ids, *ids, config)
    warm = fit(train, valid=valid, config=config._replace(epochs=1, restarts=3), init=init,
               **SMALL)
    assert warm.history[0]["train_rmse"] < previous.fit_result.history[0]["train_rmse"]
    assert warm.params.user_factors.shape == (SMALL["n_users"], ADAM["rank"])


def test_a_warm_start_of_other_shapes_is_refused(small_data):
    ids = np.arange(4), np.arange(3)
    init = warm_start(model_of(), *ids, *ids, TrainConfig(rank=2), source="m.npz")
    with pytest.raises(ValueError, match=r"the warm start from m.npz has .* this fit needs"):
        fit(small_data[0], config=TrainConfig(rank=2), init=init, **SMALL)
