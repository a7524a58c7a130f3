"""Training curves: history.json and a PNG of train and validation RMSE on one axis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorflow.stages.curves import CURVES_FILE, HISTORY_FILE, curve_figure, save_history

pytestmark = pytest.mark.unit

BLUE, ORANGE = np.array([31, 119, 180]), np.array([255, 127, 14])  # tab:blue, tab:orange


def _pixels(path):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _mask(pixels, colour):
    """``[rows, columns]`` bool: pixels of one series' colour."""
    return np.abs(pixels - colour).sum(-1) < 40


def _row_at(mask, column):
    """Mean row of a line's pixels in one column (rows grow downwards)."""
    rows = np.flatnonzero(mask[:, column])
    assert rows.size, f"no line pixels in column {column}"
    return rows.mean()


def test_every_training_run_saves_its_history_and_curve(small_model):
    out = small_model["model_dir"]
    history = json.loads((out / HISTORY_FILE).read_text())
    assert len(history) == small_model["summary"]["epochs_run"]
    assert small_model["summary"]["curves"] == str(out / CURVES_FILE)
    assert {"epoch", "train_rmse", "valid_rmse"} <= set(history[0])
    pixels = _pixels(out / CURVES_FILE)
    assert pixels.shape == (400, 700, 3)
    assert _mask(pixels, BLUE).sum() > 100 and _mask(pixels, ORANGE).sum() > 100


def test_train_and_validation_rmse_share_one_axis(tmp_path):
    # Straight lines: train falls 1.0 -> 0.5, validation 1.2 -> 0.9 over the same
    # epochs. On one y scale the train line drops 5/3 as many pixels as the
    # validation line; on twin axes each would fill its own scale (ratio ~1).
    epochs = np.arange(1, 30)
    t = (epochs - 1) / (epochs[-1] - 1)
    history = [{"epoch": int(e), "train_loss": 9.0, "train_rmse": 1.0 - 0.5 * f,
                "valid_rmse": 1.2 - 0.3 * f} for e, f in zip(epochs, t)]
    paths = save_history(history, tmp_path, title="t")
    assert json.loads((tmp_path / HISTORY_FILE).read_text()) == history
    pixels = _pixels(paths["curves"])
    train, valid = _mask(pixels, BLUE), _mask(pixels, ORANGE)
    assert train.sum() > 100, "no train RMSE line"
    assert valid.sum() > 100, "no validation RMSE line"
    left = np.flatnonzero(train.any(0))[0]
    a, b = left + 10, left + 250  # left of the legend (upper right)
    drop_train = _row_at(train, b) - _row_at(train, a)
    drop_valid = _row_at(valid, b) - _row_at(valid, a)
    assert drop_train / drop_valid == pytest.approx(0.5 / 0.3, rel=0.05)
    assert _row_at(train, a) > _row_at(valid, a), "train RMSE must be drawn below validation"
    figure = curve_figure(history)
    assert len(figure.axes) == 1
    assert [line.get_label() for line in figure.axes[0].lines] == ["train RMSE", "validation RMSE"]


def test_without_validation_or_train_rmse_only_what_was_measured_is_drawn(tmp_path):
    no_valid = save_history([{"epoch": e, "train_rmse": 1 / e} for e in range(1, 30)], tmp_path / "a")
    pixels = _pixels(no_valid["curves"])
    assert _mask(pixels, ORANGE).sum() == 0 and _mask(pixels, BLUE).sum() > 100
    # an earlier release's history: a training objective, no train RMSE; not drawn
    legacy = [{"epoch": e, "train_loss": 1 / e, "valid_rmse": 1 + 1 / e} for e in range(1, 30)]
    pixels = _pixels(save_history(legacy, tmp_path / "b")["curves"])
    assert _mask(pixels, BLUE).sum() == 0 and _mask(pixels, ORANGE).sum() > 100
    assert curve_figure(legacy).axes[0].get_title().endswith("(no train RMSE recorded)")


def test_an_empty_history_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no epochs"):
        save_history([], tmp_path)
