"""A warm start's previous model read from a path: a model directory with id maps, or a bare .npz."""

import numpy as np
import polars as pl
import pytest

from factorflow.engine import FactorModel, TrainConfig
from factorflow.engine.artifacts import ArtifactError
from factorflow.engine.warm_files import read_ids, read_previous, warm_start_from
from tests.helpers import random_params

pytestmark = pytest.mark.unit

CONFIG = TrainConfig(rank=2)


def write_model_dir(directory, user_ids, item_ids, rank=2):
    """``model.npz`` and the id maps, as ``factorflow fit --out`` writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    model = FactorModel(random_params(len(user_ids), len(item_ids), rank),
                        config=TrainConfig(rank=rank)._asdict())
    model.save(directory / "model.npz")
    for side, ids in (("user", user_ids), ("item", item_ids)):
        # written out of index order: the reader sorts by index
        frame = pl.DataFrame({f"{side}_index": np.arange(len(ids), dtype=np.int32),
                              f"{side}_id": ids}).reverse()
        frame.write_parquet(directory / f"{side}s.parquet")
    return model


def test_a_model_directory_matches_rows_by_id(tmp_path):
    model = write_model_dir(tmp_path / "m", ["a", "b", "c"], [10, 20])
    lines = []
    start = warm_start_from(tmp_path / "m", user_ids=np.array(["c", "z", "a"], object),
                            item_ids=np.array([20, 30]), config=CONFIG, log=lines.append)
    np.testing.assert_array_equal(start.user_known, [True, False, True])
    np.testing.assert_array_equal(start.params.user_factors[0], model.params.user_factors[2])
    np.testing.assert_array_equal(start.params.item_bias[0], model.params.item_bias[1])
    assert start.source == str(tmp_path / "m") and len(lines) == 1
    # its model.npz finds the same id maps beside it
    again = warm_start_from(tmp_path / "m" / "model.npz", user_ids=["c", "z", "a"],
                            item_ids=[20, 30], config=CONFIG)
    np.testing.assert_array_equal(again.params.user_factors, start.params.user_factors)


def test_a_bare_npz_matches_rows_by_index(tmp_path):
    model = FactorModel(random_params(3, 2, 2), config=CONFIG._asdict())
    model.save(tmp_path / "bare.npz")
    lines = []
    start = warm_start_from(tmp_path / "bare.npz", user_ids=["x", "y", "z", "w"],
                            item_ids=["p", "q"], config=CONFIG, log=lines.append)
    np.testing.assert_array_equal(start.user_known, [True, True, True, False])
    np.testing.assert_array_equal(start.params.user_factors[:3], model.params.user_factors)
    assert "rows matched by index" in lines[0] and len(lines) == 2


@pytest.mark.parametrize("make, reason", [
    (lambda d: None, "no model file"),
    (lambda d: (d / "model.npz").write_bytes(b"not a zip"), "is not a readable .npz"),
    (lambda d: write_model_dir(d, ["a"], [1], rank=3), "rank changed (3 -> 2)"),
    (lambda d: FactorModel(random_params(2, 2, 2)).save(d / "model.npz"),
     "no training settings"),
], ids=["missing", "garbage", "rank", "no-config"])
def test_an_unusable_model_is_one_log_line_and_a_cold_start(tmp_path, make, reason):
    d = tmp_path / "prev"
    d.mkdir()
    make(d)
    lines = []
    assert warm_start_from(d, user_ids=["a"], item_ids=[1], config=CONFIG,
                           log=lines.append) is None
    assert len(lines) == 1 and reason in lines[0] and lines[0].endswith("cold start"), lines


def test_id_maps_are_checked(tmp_path):
    path = tmp_path / "users.parquet"
    pl.DataFrame({"user_index": [0, 2], "user_id": ["a", "b"]}).write_parquet(path)
    with pytest.raises(ArtifactError, match="user_index is not 0..1"):
        read_ids(path, "user")
    pl.DataFrame({"index": [0], "id": ["a"]}).write_parquet(path)
    with pytest.raises(ArtifactError, match="lacks the columns"):
        read_ids(path, "user")


def test_read_previous_without_id_maps(tmp_path):
    FactorModel(random_params(2, 2, 2), config=CONFIG._asdict()).save(tmp_path / "model.npz")
    previous = read_previous(tmp_path)
    assert previous.user_ids is None and previous.model.n_users == 2
