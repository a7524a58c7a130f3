"""``factorflow fit`` on the command line: one JSON object, or a clean error."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from factorflow.cli.main import build_parser, main
from tests.conftest import ROOT

FACTORFLOW = Path(sys.executable).parent / "factorflow"
TRAIN = "".join(f"{u},{i},{1 + (u * 7 + i * 3) % 5}\n" for u in range(12) for i in range(10))


def run_cli(*args: str, platforms: str = "cpu") -> subprocess.CompletedProcess:
    if not FACTORFLOW.exists():
        pytest.skip(f"console script {FACTORFLOW} not installed")
    env = {**os.environ, "JAX_PLATFORMS": platforms}
    return subprocess.run([str(FACTORFLOW), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


@pytest.mark.integration
def test_fit_json_prints_exactly_one_object(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text(TRAIN)
    test = tmp_path / "test.csv"
    test.write_text("0,0,3\n1,1,4\n99,0,2\n")
    proc = run_cli("fit", "--train", str(train), "--test", str(test), "--rank", "2",
                   "--epochs", "3", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # fails on anything besides one JSON value
    assert {"rmse", "mae", "fit_seconds", "epochs_run", "n_train", "n_test",
            "ratings_per_second", "history"} <= set(result)
    assert result["n_train"] == 120 and result["n_test"] == 3 and result["epochs_run"] == 3
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]
    assert re.search(r"(epoch|sweep) 3/3", proc.stderr)  # progress goes to stderr
    assert (tmp_path / "out" / "model.npz").is_file()


@pytest.mark.integration
def test_fit_malformed_file_exits_2_naming_the_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,3\n12,abc\n")
    proc = run_cli("fit", "--train", str(bad), "--json")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"factorflow fit: error: {bad} line 3: expected 3 fields, got 2: '12,abc'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.unit
def test_parser_keeps_old_commands_and_adds_fit():
    parser = build_parser()
    args = parser.parse_args(["fit", "--train", "r.csv", "--lr", "0.1", "--valid-fraction", "0.2"])
    assert (args.train, args.lr, args.valid_fraction, args.format) == ("r.csv", 0.1, 0.2, "auto")
    assert parser.parse_args(["show", "--warehouse", "w.duckdb"]).command == "show"
    assert parser.parse_args(["demo-data", "--warehouse", "w.duckdb"]).command == "demo-data"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "nope"], "unknown loss 'nope'"),
        (["--restarts", "0"], "restarts must be >= 1, got 0"),
        (["--patience", "2"], "patience needs a validation split"),
    ],
)
def test_fit_bad_arguments_exit_2(tmp_path, capsys, extra, message):
    train = tmp_path / "train.csv"
    train.write_text(TRAIN)
    assert main(["fit", "--train", str(train), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    last = captured.err.splitlines()[-1]  # progress lines may come first
    assert last.startswith("factorflow fit: error: ") and message in last


@pytest.mark.unit
def test_fit_missing_file_and_bad_format(tmp_path, capsys):
    assert main(["fit", "--train", str(tmp_path / "nope.csv")]) == 2
    assert "factorflow fit: error: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["fit", "--train", "x.csv", "--format", "xls"])
    assert info.value.code == 2


@pytest.mark.unit
def test_fit_prints_a_readable_summary(tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text(TRAIN)
    assert main(["fit", "--train", str(train), "--test", str(train), "--rank", "2",
                 "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "trained on 120 ratings (12 users x 10 items): rank 2, 2 epochs" in captured.out
    assert "test RMSE" in captured.out and "bias-only" in captured.out
    assert re.search(r"(epoch|sweep) 1/2", captured.err)


def cuda_starts() -> bool:
    """Whether JAX starts its CUDA backend here (asked in a fresh process, as the command would)."""
    probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"],
                           capture_output=True, env={**os.environ, "JAX_PLATFORMS": "cuda"},
                           timeout=300)
    return probe.returncode == 0


@pytest.mark.integration
def test_a_backend_that_cannot_start_is_a_clean_error(tmp_path):
    """JAX_PLATFORMS=cuda where CUDA cannot start: one line naming the backend, exit 2."""
    if cuda_starts():
        pytest.skip("JAX starts CUDA here: there is no failing backend to report")
    train = tmp_path / "train.csv"
    train.write_text(TRAIN)
    proc = run_cli("fit", "--train", str(train), "--epochs", "2", platforms="cuda")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "JAX could not start a backend (JAX_PLATFORMS=cuda)" in proc.stderr
