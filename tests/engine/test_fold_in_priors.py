"""The fold-in spec of a model: exact for a converged gradient model, saved and read back."""

import numpy as np
import pytest

from factorflow.engine import FactorModel, TrainConfig
from factorflow.engine.fold_in import FoldInSpec, RowRatings, conditional_means, side_rows
from factorflow.engine.fold_in_priors import (empirical_prior, gradient_spec, spec_arrays,
                                              spec_from_arrays)
from tests.helpers import SMALL

pytestmark = pytest.mark.unit

RANK = 3


def _converged(train, loss="squared"):
    """An adam model trained to its stationary point (the rate decays to 1e-3 of itself)."""
    config = TrainConfig(optimizer="adam", rank=RANK, epochs=600, reg=0.05, learning_rate=0.05,
                         schedule="cosine", lr_decay=1e-3, loss=loss)
    return FactorModel.fit(train, **SMALL, config=config)


@pytest.mark.parametrize("loss", ["squared", "huber"])
def test_a_converged_gradient_models_own_rows_fold_back_in(small_data, loss):
    """Each row of a converged model is its own fold-in: the same per-row objective."""
    train, _ = small_data
    model = _converged(train, loss)
    p, spec = model.params, model.fold_in_spec
    for fixed, own, (rows, cols), n, prior in (
            ((p.item_factors, p.item_bias), (p.user_factors, p.user_bias),
             (train.users, train.items), SMALL["n_users"], spec.users),
            ((p.user_factors, p.user_bias), (p.item_factors, p.item_bias),
             (train.items, train.users), SMALL["n_items"], spec.items)):
        x = conditional_means(side_rows(*fixed), float(p.mean),
                              RowRatings(rows, cols, train.ratings), n_rows=n, prior=prior,
                              alpha=spec.alpha, loss=loss)
        np.testing.assert_allclose(x, side_rows(*own), atol=1e-5)


def test_spec_is_a_named_tuple_of_plain_values():
    spec = gradient_spec(RANK, dict(reg=0.1, loss="huber"))
    assert isinstance(spec, FoldInSpec) and spec.loss == "huber" and spec.alpha == 2.0
    np.testing.assert_allclose(np.diag(spec.users.per_rating), 0.2)


def test_gradient_spec_refuses_l1():
    with pytest.raises(ValueError, match="l2-penalised"):
        gradient_spec(RANK, dict(reg=0.1, penalty="l1"))


def test_empirical_prior_skips_rows_without_data():
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.normal(2.0, 0.5, (400, 3)), np.zeros((100, 3))])
    prior = empirical_prior(rows)
    np.testing.assert_allclose(prior.mean, 2.0, atol=0.1)
    np.testing.assert_allclose(np.linalg.inv(prior.precision), 0.25 * np.eye(3), atol=0.05)
    assert not prior.per_rating.any()


def test_spec_arrays_round_trip():
    spec = gradient_spec(RANK, dict(reg=0.1, loss="huber", biases=False, nonneg=True))
    back = spec_from_arrays(spec_arrays(spec))
    assert (back.alpha, back.loss, back.biases, back.nonneg) == (2.0, "huber", False, True)
    for a, b in zip(spec.users + spec.items, back.users + back.items):
        np.testing.assert_array_equal(a, b)
    assert spec_from_arrays({}) is None
