"""Training curves: history.json and a PNG of loss and validation RMSE by epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorflow.curves import CURVES_FILE, HISTORY_FILE, save_history

pytestmark = pytest.mark.unit


def _pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def test_every_training_run_saves_its_history_and_curve(small_model):
    out = small_model["model_dir"]
    history = json.loads((out / HISTORY_FILE).read_text())
    assert len(history) == small_model["summary"]["epochs_run"]
    assert small_model["summary"]["curves"] == str(out / CURVES_FILE)
    assert {"epoch", "valid_rmse"} <= set(history[0])
    pixels = _pixels(out / CURVES_FILE)
    assert pixels.shape == (400, 700, 3)


def test_the_curve_draws_each_series(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "valid_rmse": 1 + 1 / e} for e in range(1, 30)]
    paths = save_history(history, tmp_path, title="t")
    assert json.loads((tmp_path / HISTORY_FILE).read_text()) == history
    pixels = _pixels(paths["curves"]).astype(int)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # tab:blue, tab:orange
    assert (np.abs(pixels - blue).sum(-1) < 40).sum() > 100, "no loss line"
    assert (np.abs(pixels - orange).sum(-1) < 40).sum() > 100, "no validation line"
    # without validation, no orange line
    no_valid = save_history([{"epoch": e, "train_loss": 1 / e} for e in range(1, 30)], tmp_path / "b")
    assert (np.abs(_pixels(no_valid["curves"]).astype(int) - orange).sum(-1) < 40).sum() == 0


def test_an_empty_history_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        save_history([], tmp_path)
