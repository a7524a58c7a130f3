"""``factorflow fit --init-from``: a daily run that starts from yesterday's ``--out`` directory."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from factorflow.cli.fit_files import fit_files
from factorflow.cli.main import build_parser
from factorflow.engine import FactorModel
from factorflow.engine.warm import warm_epochs
from tests.cli.test_fit_files import SETTINGS, write_synthetic
from tests.cli.test_main import run_cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """``(yesterday's train, today's train, test)``: yesterday's lacks a tenth of the rows."""
    d = tmp_path_factory.mktemp("warm")
    train, test = write_synthetic(d)
    today = pl.read_csv(train)
    keep = np.random.default_rng(3).random(today.height) < 0.9
    yesterday = d / "yesterday.csv"
    today.filter(keep).write_csv(yesterday)
    return yesterday, train, test


@pytest.fixture(scope="module")
def yesterday_dir(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("yesterday")
    fit_files(files[0], out=out, **SETTINGS)
    return out


@pytest.mark.unit
def test_a_warm_fit_starts_from_the_out_directory(files, yesterday_dir):
    lines = []
    warm = fit_files(files[1], test_path=files[2], init_from=yesterday_dir, log=lines.append,
                     **SETTINGS)
    cold = fit_files(files[1], test_path=files[2], **SETTINGS)
    assert warm["warm_start_from"] == str(yesterday_dir) and cold["warm_start_from"] is None
    assert warm["config"]["init_from"] == str(yesterday_dir)
    assert any(line.startswith(f"warm start from {yesterday_dir}: ") for line in lines)
    assert warm["epochs_run"] == warm_epochs(SETTINGS["epochs"])
    assert warm["history"][0]["test_rmse"] < cold["history"][0]["test_rmse"] - 0.2
    assert warm["rmse"] < cold["rmse"] + 0.01
    json.dumps(warm, allow_nan=False)


@pytest.mark.unit
@pytest.mark.parametrize("previous, reason", [
    ("missing", "no model file"),
    ("yesterday", "rank changed (4 -> 3)"),
])
def test_a_fallback_is_exactly_the_cold_fit(files, yesterday_dir, tmp_path, previous, reason):
    path = yesterday_dir if previous == "yesterday" else tmp_path / "nothing-here"
    settings = {**SETTINGS, "rank": 3, "epochs": 6}
    lines = []
    warm = fit_files(files[1], init_from=path, out=tmp_path / "warm", log=lines.append,
                     **settings)
    fit_files(files[1], out=tmp_path / "cold", **settings)
    assert warm["warm_start_from"] is None
    fallbacks = [line for line in lines if line.startswith("warm start")]
    assert len(fallbacks) == 1 and reason in fallbacks[0], fallbacks
    a, b = (FactorModel.load(tmp_path / name / "model.npz").params for name in ("warm", "cold"))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.unit
def test_the_parser_takes_init_from():
    args = build_parser().parse_args(["fit", "--train", "t.csv", "--init-from", "model/"])
    assert args.init_from == "model/"
    assert build_parser().parse_args(["fit", "--train", "t.csv"]).init_from is None


@pytest.mark.integration
def test_fit_init_from_on_the_command_line(files, tmp_path):
    common = ["fit", "--train", str(files[1]), "--rank", "3", "--epochs", "12"]
    first = run_cli(*common, "--out", str(tmp_path / "day1"))
    assert first.returncode == 0, first.stderr
    proc = run_cli(*common, "--test", str(files[2]), "--init-from", str(tmp_path / "day1"),
                   "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["warm_start_from"] == str(tmp_path / "day1")
    assert result["epochs_run"] == warm_epochs(12)
    assert f"warm start from {tmp_path / 'day1'}: " in proc.stderr
