"""The train RMSE a gradient fit records per epoch: the RMSE of that epoch's
parameters on the training ratings, whatever the loss, penalty, layout or
number of restarts (``train_loss`` is the objective, not an RMSE)."""

import numpy as np
import pytest

from factorflow.engine.metrics import rmse
from factorflow.engine.gradient.fit import TrainConfig, fit, predict
from tests.helpers import synthetic

pytestmark = pytest.mark.unit

SMALL = dict(n_users=60, n_items=50)
MEDIUM = dict(n_users=400, n_items=300)  # 9,000 train ratings: slotted when sparse


@pytest.fixture(scope="module")
def datasets():
    return {"small": synthetic(n=1500, **SMALL), "medium": synthetic(n=10_000, **MEDIUM)}


@pytest.mark.parametrize("size, config", [
    ("small", dict(optimizer="adam")),                                 # dense layout
    ("small", dict(optimizer="adam", representation="sparse")),        # COO
    ("medium", dict(optimizer="adam", representation="sparse")),       # slotted
    ("small", dict(optimizer="sgd", batch_size=256)),                  # minibatches
    ("small", dict(optimizer="adam", restarts=2, loss="huber", reg=0.3)),
], ids=["dense", "coo", "slotted", "sgd", "restarts-huber"])
def test_train_rmse_is_the_rmse_of_each_epochs_parameters(datasets, size, config):
    (train, valid), shape = datasets[size], SMALL if size == "small" else MEDIUM
    scored = {}

    def score(epoch, params):
        scored[epoch] = rmse(np.asarray(predict(params, train.users, train.items)), train.ratings)

    result = fit(train, valid=valid, config=TrainConfig(**{"rank": 4, "epochs": 4, **config}),
                 on_epoch=score, **shape)
    recorded = [h["train_rmse"] for h in result.history]
    np.testing.assert_allclose(recorded, [scored[h["epoch"]] for h in result.history], rtol=1e-5)
    assert recorded[-1] < recorded[0]
    if config.get("reg"):  # the objective carries the penalty: its root is no RMSE
        assert abs(np.sqrt(result.history[-1]["train_loss"]) - recorded[-1]) > 1e-3
