"""``factorflow fold-in``: a fitted model directory extended by new users' and items' ratings."""

from __future__ import annotations

import argparse
import json

import numpy as np
import polars as pl
import pytest

from factorflow.cli.fit_files import fit_files
from factorflow.cli.fold_in_command import add_fold_in_parser
from factorflow.cli.fold_in_files import extend_id_map, fold_in_files, read_model_dir, to_index
from factorflow.engine import FactorModel

pytestmark = pytest.mark.unit


def _lines(rows):
    return "user,item,rating\n" + "".join(f"{u},{i},{r:.3f}\n" for u, i, r in rows)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A fitted model dir (users user0..user49, items 0..34) and files of what it lacks.

    ``new.csv``: half the ratings of users user50..user59 (of known items) and
    every rating of items 35..39 by known users, plus one (new user, new item)
    rating; ``test.csv``: the new users' other half.
    """
    d = tmp_path_factory.mktemp("fold_in")
    rng = np.random.default_rng(0)
    p, q = rng.normal(0, 0.8, (60, 2)), rng.normal(0, 0.8, (40, 2))
    bi = rng.normal(0, 0.5, 40)
    flat = rng.choice(60 * 40, size=1800, replace=False)
    u, i = flat // 40, flat % 40
    r = np.clip(3.5 + bi[i] + np.sum(p[u] * q[i], 1) + rng.normal(0, 0.2, u.size), 1, 5)
    rows = [(f"user{a}", b, c) for a, b, c in zip(u, i, r)]
    old_user, old_item, half = u < 50, i < 35, rng.random(u.size) < 0.5
    pick = lambda mask: [row for row, m in zip(rows, mask) if m]  # noqa: E731
    (d / "train.csv").write_text(_lines(pick(old_user & old_item)))
    new = pick((~old_user & old_item & half) | (old_user & ~old_item)) + [("user55", 39, 4.0)]
    (d / "new.csv").write_text(_lines(new))
    (d / "test.csv").write_text(_lines(pick(~old_user & old_item & ~half)))
    fit_files(d / "train.csv", out=d / "model", optimizer="gibbs", rank=4, epochs=40)
    return d


def test_new_users_and_items_are_folded_in_and_scored(files, tmp_path):
    out = tmp_path / "extended"
    result = fold_in_files(files / "model", files / "new.csv", test_path=files / "test.csv",
                           out=out)
    assert (result["n_users_folded"], result["n_items_folded"]) == (10, 5)
    assert (result["n_users"], result["n_items"]) == (60, 40)
    assert result["n_ignored"] == 1 and result["n_test_unknown_user"] == 0
    json.dumps(result, allow_nan=False)
    model, users, items = read_model_dir(out)
    old, old_users, old_items = read_model_dir(files / "model")
    np.testing.assert_array_equal(model.params.user_factors[:50], old.params.user_factors)
    assert users.head(50).equals(old_users) and items.head(35).equals(old_items)
    assert users["user_id"].to_list()[50:] == sorted(f"user{k}" for k in range(50, 60))
    assert model.fold_in_spec.alpha == old.fold_in_spec.alpha
    # What the model knew before: the new users' mean and item biases only.
    before = fold_in_files(files / "model", files / "new.csv", test_path=files / "test.csv")
    assert before["rmse"] == result["rmse"]  # the same fold-in, deterministic
    test = pl.read_csv(files / "test.csv")
    u = to_index(test["user"], users, "user")
    i = to_index(test["item"].cast(pl.Int64), items, "item")
    assert np.all(u >= 50) and np.all(i < 35)
    pred = old.params.mean + old.params.item_bias[i]
    base = float(np.sqrt(np.mean((pred - test["rating"].to_numpy()) ** 2)))
    assert result["rmse"] < base - 0.2


def test_folding_into_the_extended_directory_again(files, tmp_path):
    fold_in_files(files / "model", files / "new.csv", out=tmp_path / "a")
    (tmp_path / "more.csv").write_text(_lines([("zed", 3, 5.0), ("zed", 4, 1.0)]))
    again = fold_in_files(tmp_path / "a", tmp_path / "more.csv", out=tmp_path / "b")
    assert again["n_users_folded"] == 1 and again["n_users"] == 61
    assert again["rmse"] is None and again["mae"] is None
    assert FactorModel.load(tmp_path / "b" / "model.npz").n_users == 61


def test_extend_id_map_appends_sorted_and_mixes_types_as_text():
    ids = pl.DataFrame({"user_index": pl.Series([0, 1], dtype=pl.Int32), "user_id": [5, 7]})
    out = extend_id_map(ids, pl.Series([9, 7, 6, 9]), "user")
    assert out["user_id"].to_list() == [5, 7, 6, 9] and out["user_index"].to_list() == [0, 1, 2, 3]
    mixed = extend_id_map(ids, pl.Series(["x", "7"]), "user")
    assert mixed["user_id"].to_list() == ["5", "7", "x"]


def test_parser_and_handler_print_one_json_object(files, capsys):
    parser = argparse.ArgumentParser(prog="factorflow")
    add_fold_in_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fold-in", "--model", str(files / "model"), "--ratings",
                              str(files / "new.csv"), "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"rmse", "mae", "n_users_folded", "n_items_folded", "seconds"} <= set(out)
    assert out["rmse"] is None


def test_missing_model_dir_names_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="factorflow fit --out"):
        read_model_dir(tmp_path)


# Through the command itself (once ``factorflow.cli.main`` registers ``fold-in``).

def test_main_fold_in_json(files, tmp_path, capsys):
    from factorflow.cli.main import main

    code = main(["fold-in", "--model", str(files / "model"), "--ratings", str(files / "new.csv"),
                 "--test", str(files / "test.csv"), "--out", str(tmp_path / "x"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_users_folded"] == 10 and out["rmse"] is not None and out["seconds"] > 0
    assert (tmp_path / "x" / "model.npz").is_file()


def test_main_fold_in_readable_summary_and_errors(files, tmp_path, capsys):
    from factorflow.cli.main import main

    assert main(["fold-in", "--model", str(files / "model"), "--ratings",
                 str(files / "new.csv")]) == 0
    assert "folded in 10 users and 5 items" in capsys.readouterr().out
    assert main(["fold-in", "--model", str(tmp_path), "--ratings", str(files / "new.csv")]) == 2
    assert "factorflow fit --out" in capsys.readouterr().err
