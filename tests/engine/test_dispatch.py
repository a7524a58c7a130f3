"""The one fit entry point: Gibbs by default, the gradient engine for the other optimizers."""

import numpy as np
import pytest

from factorflow.engine import FitResult, GibbsConfig, TrainConfig, fit
from factorflow.engine.dispatch import gibbs_config
from factorflow.engine.factors import predict
from factorflow.engine.metrics import fit_baseline, predict_baseline, rmse
from tests.helpers import SMALL, synthetic

pytestmark = pytest.mark.unit


def test_the_default_engine_is_gibbs_and_beats_the_baseline():
    train, valid = synthetic()
    assert TrainConfig().optimizer == "gibbs"
    result = fit(train, n_users=400, n_items=300, valid=valid)
    baseline = fit_baseline(train, n_users=400, n_items=300)
    base_rmse = rmse(predict_baseline(baseline, valid.users, valid.items), valid.ratings)
    model_rmse = rmse(np.asarray(predict(result.params, valid.users, valid.items)), valid.ratings)
    assert model_rmse < 0.8 * base_rmse, (model_rmse, base_rmse)
    # the history describes the exact average of the samples; the returned model is
    # its best cut keeping 99.9% of the factor energy (averaging.best_rank_factors)
    assert model_rmse == pytest.approx(result.history[-1]["valid_rmse"], rel=1e-3)


@pytest.mark.parametrize("optimizer, own_key", [("gibbs", "samples"), ("adam", "restarts")])
def test_the_optimizer_picks_the_engine(small_data, optimizer, own_key):
    """Each engine's history rows carry its own key: Gibbs its kept samples, the
    gradient loop its restarts."""
    train, valid = small_data
    result = fit(train, valid=valid, config=TrainConfig(rank=3, epochs=3, optimizer=optimizer),
                 **SMALL)
    assert isinstance(result, FitResult) and len(result.history) == 3
    assert own_key in result.history[-1]
    other = ({"samples", "restarts"} - {own_key}).pop()
    assert other not in result.history[-1]


@pytest.mark.parametrize("change, named", [
    (dict(restarts=2), "restarts"),
    (dict(nonneg=True), "nonneg"),
    (dict(biases=False), "biases=False"),
    (dict(penalty="l1"), "penalty"),
])
def test_gibbs_refuses_gradient_only_settings(small_data, change, named):
    config = TrainConfig(rank=3, epochs=3, optimizer="gibbs", **change)
    with pytest.raises(ValueError, match=f"optimizer 'gibbs' does not take {named}"):
        fit(small_data[0], config=config, **SMALL)


def test_gibbs_settings_carry_over():
    config = TrainConfig(rank=7, epochs=9, seed=4, learning_rate=0.3, reg=0.2)
    assert gibbs_config(config, None) == GibbsConfig(rank=7, sweeps=9, seed=4, clip=False)
    # a single sweep keeps its sample: the burn-in shrinks below the sweeps
    assert gibbs_config(config._replace(epochs=1), None).burn_in == 0


def test_settings_are_checked_for_every_engine(small_data):
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        fit(small_data[0], config=TrainConfig(optimizer="gibbs", learning_rate=0.0), **SMALL)


@pytest.mark.parametrize("scale", [(0.5, 5.0, 0.5), (1.0, 5.0, 1.0), (-10.0, 10.0, 1.0)],
                         ids=["half-stars", "1-5", "-10..10"])
def test_defaults_do_well_on_any_rating_scale(scale):
    """The shipped defaults have nothing tuned to one scale: the same relative gain everywhere."""
    low, high, step = scale
    train, valid = synthetic(seed=11)

    def rescale(t):  # map [1, 5] onto [low, high], snapped to the scale's step
        r = low + (t.ratings - 1.0) * (high - low) / 4.0
        return t._replace(ratings=(np.round(r / step) * step).astype(np.float32))

    train, valid = rescale(train), rescale(valid)
    result = fit(train, n_users=400, n_items=300, valid=valid)
    baseline = fit_baseline(train, n_users=400, n_items=300)
    base_rmse = rmse(predict_baseline(baseline, valid.users, valid.items), valid.ratings)
    model_rmse = rmse(np.asarray(predict(result.params, valid.users, valid.items)), valid.ratings)
    print(f"scale {scale}: model {model_rmse:.4f} vs baseline {base_rmse:.4f}")
    assert model_rmse < 0.8 * base_rmse, (scale, model_rmse, base_rmse)
