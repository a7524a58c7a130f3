"""A warm-started Gibbs chain, and early stopping on the averaged model (patience)."""

import numpy as np
import pytest

from factorflow.engine import FactorModel, TrainConfig, fit
from factorflow.engine.gibbs.sampler import GibbsConfig, fit_gibbs, stalled
from factorflow.engine.triplets import Triplets
from factorflow.engine.warm import warm_epochs, warm_start
from tests.helpers import synthetic

pytestmark = pytest.mark.unit

SHAPE = dict(n_users=200, n_items=150)
CONFIG = TrainConfig(rank=4)


@pytest.fixture(scope="module")
def data():
    """``(train, valid, yesterday)``: yesterday's training set is a random 90% of today's."""
    train, valid = synthetic(n=9000, **SHAPE)
    keep = np.random.default_rng(1).random(len(train)) < 0.9
    return train, valid, Triplets(train.users[keep], train.items[keep], train.ratings[keep])


@pytest.fixture(scope="module")
def previous(data):
    """A converged model (default 60 sweeps) of yesterday's ratings."""
    _, valid, yesterday = data
    return FactorModel.fit(yesterday, valid=valid, config=CONFIG, **SHAPE)


def test_a_warm_chain_is_near_the_previous_rmse_from_its_first_sweeps(data, previous):
    train, valid, _ = data
    ids = np.arange(SHAPE["n_users"]), np.arange(SHAPE["n_items"])
    init = warm_start(previous, *ids, *ids, CONFIG, source="yesterday")
    warm = fit(train, valid=valid, config=CONFIG, init=init, **SHAPE)
    cold = fit(train, valid=valid, config=CONFIG, **SHAPE)
    before = previous.fit_result.history[-1]["valid_rmse"]
    assert all(h["valid_rmse"] < before + 0.01 for h in warm.history[:2])
    assert cold.history[1]["valid_rmse"] > before + 0.1  # a cold chain is far from it then
    # the warm run's budget, and its result is as good as the cold run's
    assert len(warm.history) == warm_epochs(CONFIG.epochs) == warm.best_epoch
    assert warm.history[-1]["valid_rmse"] < cold.history[-1]["valid_rmse"] + 0.005
    assert warm.warm_start == "yesterday" and cold.warm_start is None


def test_new_rows_start_cold_and_are_learned(data, previous):
    """Users the previous model lacked (here: a tenth of them, ids shifted) start at
    the prior and the baseline; the fit still reaches the cold fit's accuracy."""
    train, valid, _ = data
    old_users = np.arange(SHAPE["n_users"])
    old_users[::10] += 10_000  # these ids are unknown today
    init = warm_start(previous, old_users, np.arange(150), np.arange(200), np.arange(150),
                      CONFIG)
    assert init.user_known.sum() == 180 and init.item_known.all()
    warm = fit(train, valid=valid, config=CONFIG, init=init, **SHAPE)
    cold = fit(train, valid=valid, config=CONFIG, **SHAPE)
    assert warm.history[-1]["valid_rmse"] < cold.history[-1]["valid_rmse"] + 0.01


class TestPatience:
    def test_stops_when_the_average_stops_improving(self, data):
        train, valid, _ = data
        lines = []
        result = fit(train, valid=valid, config=CONFIG._replace(epochs=200, patience=2),
                     log=lines.append, **SHAPE)
        run = len(result.history)
        assert run < 200 and result.best_epoch == run
        assert lines[-1].startswith("early stop after 2 sweeps without a better valid RMSE")
        scored = [h["valid_rmse"] for h in result.history[2:]]  # after the burn-in of 2
        assert int(np.argmin(scored)) == len(scored) - 3

    def test_without_validation_every_sweep_runs(self, data):
        train, _, _ = data
        result = fit_gibbs(train, config=GibbsConfig(rank=2, sweeps=6, patience=1), **SHAPE)
        assert len(result.history) == 6

    @pytest.mark.parametrize("rmses, burn_in, patience, stop", [
        ([0.9, 0.8, 0.7, 0.71, 0.72], 0, 2, True),
        ([0.9, 0.8, 0.7, 0.71, 0.69], 0, 2, False),
        ([0.5, 0.9, 0.8, 0.85], 1, 2, False),   # burn-in sweeps do not count
        ([0.9, 0.8, 0.85], 0, None, False),
    ])
    def test_stalled(self, rmses, burn_in, patience, stop):
        history = [{"valid_rmse": r} for r in rmses]
        assert stalled(history, burn_in, patience) is stop

    def test_patience_is_checked(self, data):
        with pytest.raises(ValueError, match="patience must be >= 1"):
            fit_gibbs(data[0], config=GibbsConfig(patience=0), **SHAPE)
