"""``fit_files``: files in, a model and honest test metrics out."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from factorflow.cli.fit_files import UNKNOWN, fit_files, predict_open
from factorflow.engine import FactorModel, FactorParams

pytestmark = pytest.mark.unit

# Gibbs sampling (the default engine) takes rank and sweeps; its priors stand in
# for a learning rate and reg.
SETTINGS = dict(optimizer="gibbs", rank=4, epochs=40)
# A gradient run whose every epoch lowers the test RMSE on the synthetic files.
ADAM = dict(optimizer="adam", rank=2, learning_rate=0.1, reg=0.01, steps_per_epoch=5)


def write_synthetic(directory, n_users=60, n_items=40, n=1500, seed=0):
    """Rank-2 ratings on string user ids; the test file adds unseen ids."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.8, (n_users, 2)), rng.normal(0, 0.8, (n_items, 2))
    bi = rng.normal(0, 0.5, n_items)
    flat = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = flat // n_items, flat % n_items
    r = np.clip(3.5 + bi[i] + np.sum(p[u] * q[i], 1) + rng.normal(0, 0.2, n), 1, 5)
    lines = [f"user{a},{b},{c:.3f}" for a, b, c in zip(u, i, r)]
    cut = int(0.85 * n)
    train, test = directory / "train.csv", directory / "test.csv"
    train.write_text("user,item,rating\n" + "\n".join(lines[:cut]) + "\n")
    # Unseen user with a known item, known user with an unseen item, both unseen.
    extra = ["stranger,0,4.0", f"user{u[0]},999,2.0", "stranger,999,3.0"]
    test.write_text("user,item,rating\n" + "\n".join(lines[cut:] + extra) + "\n")
    return train, test


def rmse_of_saved_model(model_dir, test_path):
    """RMSE of a saved model on a test file, by joining the saved id maps (unseen ids: known biases only)."""
    p = FactorModel.load(model_dir / "model.npz").params
    users = pl.read_parquet(model_dir / "users.parquet")
    items = pl.read_parquet(model_dir / "items.parquet")
    test = pl.read_csv(test_path).with_columns(pl.col("item").cast(items["item_id"].dtype))
    test = (test.join(users, left_on="user", right_on="user_id", how="left")
                .join(items, left_on="item", right_on="item_id", how="left"))
    errors = []
    for u, i, rating in test.select("user_index", "item_index", "rating").iter_rows():
        pred = float(p.mean)
        pred += 0.0 if u is None else float(p.user_bias[u])
        pred += 0.0 if i is None else float(p.item_bias[i])
        if u is not None and i is not None:
            pred += float(np.dot(p.user_factors[u], p.item_factors[i]))
        errors.append(pred - rating)
    return float(np.sqrt(np.mean(np.square(errors))))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def fitted(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return fit_files(files[0], test_path=files[1], out=out, **SETTINGS), out


def test_beats_the_global_mean_on_test(fitted, files):
    result, _ = fitted
    train = pl.read_csv(files[0])["rating"].to_numpy()
    test = pl.read_csv(files[1])["rating"].to_numpy()
    mean_rmse = float(np.sqrt(np.mean((test - train.mean()) ** 2)))
    assert result["rmse"] < 0.8 * mean_rmse
    assert result["rmse"] < result["baseline_rmse"]
    assert 0 < result["mae"] < result["rmse"]


def test_unseen_test_ids_are_scored_not_dropped(fitted, files):
    result, _ = fitted
    n_test_lines = len(files[1].read_text().splitlines()) - 1
    assert result["n_test"] == n_test_lines
    assert result["n_test_unknown_user"] == 2 and result["n_test_unknown_item"] == 2
    assert result["n_train"] + result["n_valid"] == 1275


def test_predict_open_uses_known_biases_only():
    params = FactorParams(np.float32(3.0), np.array([0.5, -0.5], np.float32),
                          np.array([1.0, 0.25], np.float32),
                          np.array([[1.0], [2.0]], np.float32), np.array([[0.5], [1.0]], np.float32))
    users = np.array([0, UNKNOWN, 1, UNKNOWN])
    items = np.array([UNKNOWN, 1, 0, UNKNOWN])
    np.testing.assert_allclose(predict_open(params, users, items),
                               [3.5, 3.25, 3.0 - 0.5 + 1.0 + 2.0 * 0.5, 3.0], rtol=1e-6)


def test_result_is_json_safe_with_per_epoch_history(fitted):
    result, _ = fitted
    json.dumps(result, allow_nan=False)
    assert result["epochs_run"] == len(result["history"]) == SETTINGS["epochs"]
    assert result["fit_seconds"] > 0 and result["ratings_per_second"] > 0
    for want, row in enumerate(result["history"], start=1):
        assert {"epoch", "seconds", "train_loss", "valid_rmse", "test_rmse"} <= set(row)
        assert row["epoch"] == want and row["valid_rmse"] is None
    seconds = [row["seconds"] for row in result["history"]]
    assert seconds == sorted(seconds)
    # Every sweep is scored on the test file; the last one's model is the one returned.
    assert all(row["test_rmse"] is not None for row in result["history"])
    assert result["history"][-1]["test_rmse"] == pytest.approx(result["rmse"], rel=1e-6)


def test_out_dir_holds_model_id_maps_and_metrics(fitted):
    result, out = fitted
    model = FactorModel.load(out / "model.npz")
    assert (model.n_users, model.n_items) == (result["n_users"], result["n_items"])
    users = pl.read_parquet(out / "users.parquet")
    assert users.columns == ["user_index", "user_id"] and users.height == model.n_users
    assert users["user_id"].dtype == pl.String
    assert json.loads((out / "metrics.json").read_text())["rmse"] == result["rmse"]


def test_saved_model_and_id_maps_reproduce_the_test_rmse(fitted, files):
    result, out = fitted
    assert rmse_of_saved_model(out, files[1]) == pytest.approx(result["rmse"], rel=1e-5)


def test_validation_split_and_early_stopping(files):
    result = fit_files(files[0], valid_fraction=0.2, patience=2, seed=3, optimizer="adam",
                       rank=2, epochs=300, learning_rate=0.1, reg=0.05)
    assert result["n_valid"] > 0 and result["n_train"] + result["n_valid"] == 1275
    assert result["epochs_run"] < 300 and result["best_epoch"] <= result["epochs_run"]
    assert all(row["valid_rmse"] is not None for row in result["history"])
    assert "rmse" not in result and result["n_test"] == 0


def test_per_epoch_test_rmse_is_each_epochs_model_on_the_test_file(files, tmp_path):
    """Epoch k's test RMSE is that of a k-epoch run's saved model (a constant-rate adam run
    repeats its first epochs exactly), computed here from the saved files; it falls epoch by epoch."""
    result = fit_files(files[0], test_path=files[1], epochs=3, **ADAM)
    per_epoch = [row["test_rmse"] for row in result["history"]]
    want = []
    for k in (1, 2, 3):
        fit_files(files[0], test_path=files[1], out=tmp_path / f"epochs-{k}", epochs=k, **ADAM)
        want.append(rmse_of_saved_model(tmp_path / f"epochs-{k}", files[1]))
    assert per_epoch == pytest.approx(want, rel=1e-4)
    assert per_epoch[0] > per_epoch[1] > per_epoch[2]


def test_loss_by_module_and_function(files, tmp_path, monkeypatch):
    (tmp_path / "my_losses.py").write_text(
        "import jax.numpy as jnp\n\ndef halved(pred, target):\n"
        "    return 0.5 * jnp.square(pred - target)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = fit_files(files[0], loss="my_losses:halved", rank=2, epochs=2)
    assert result["loss"] == "my_losses:halved" and result["epochs_run"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(colour="red"), r"unknown training setting\(s\) \['colour'\]"),
        (dict(loss="nope"), "unknown loss 'nope'"),
        (dict(loss="no_such_module:f"), "no_such_module"),
        (dict(patience=3), "patience needs a validation split"),
        (dict(valid_fraction=1.0), r"valid_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_settings_fail_before_training(files, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit_files(files[0], **kwargs)
