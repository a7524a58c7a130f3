"""Build stage: id maps, the split artifacts, and the bounded passes that make them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factorflow.stages.build import build_matrices, load_matrices
from tests.engine.test_split import reference_split

pytestmark = pytest.mark.unit


def _write(tmp_path, users, items, ratings):
    path = tmp_path / "ratings.parquet"
    pl.DataFrame({"user_id": users, "item_id": items, "rating": ratings}).write_parquet(path)
    return path


class TestBuildMatrices:
    def test_string_ids_come_back_exactly(self, tmp_path):
        users = ["b2c1-uuid", "a9f0-uuid", "b2c1-uuid", "zz"] * 3
        items = ["x", "y", "y", "x"] * 3
        path = _write(tmp_path, users, [f"{i}{k}" for k, i in enumerate(items)], [1.0] * 12)
        summary = build_matrices(path, tmp_path / "m", valid_fraction=0.0)
        data = load_matrices(tmp_path / "m")
        assert summary["n_users"] == 3
        assert data.user_ids.to_list() == sorted(set(users))
        # every (index -> id) pair maps back to an input rating
        got = {(data.user_ids[int(u)], data.item_ids[int(i)]) for u, i in zip(data.train.users, data.train.items)}
        assert got == {(u, f"{i}{k}") for k, (u, i) in enumerate(zip(users, items))}

    def test_integer_ids_keep_their_type(self, small_ratings_parquet, tmp_path):
        build_matrices(small_ratings_parquet, tmp_path)
        data = load_matrices(tmp_path)
        assert data.user_ids.dtype == pl.Int64 and data.item_ids.dtype == pl.Int64
        assert data.user_ids.is_sorted() and data.user_ids.n_unique() == len(data.user_ids)

    def test_split_is_deterministic_and_complete(self, small_ratings_parquet, tmp_path):
        a = build_matrices(small_ratings_parquet, tmp_path / "a", seed=3)
        b = build_matrices(small_ratings_parquet, tmp_path / "b", seed=3)
        c = build_matrices(small_ratings_parquet, tmp_path / "c", seed=4)
        ta, tb, tc = (load_matrices(tmp_path / k) for k in "abc")
        for x, y in zip(ta.valid, tb.valid):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(ta.valid.items, tc.valid.items)
        assert a["n_train"] + a["n_valid"] == a["n_ratings"] == b["n_ratings"] == c["n_ratings"]
        # train and validation are disjoint
        key = lambda t: set(zip(t.users.tolist(), t.items.tolist()))  # noqa: E731
        assert not key(ta.train) & key(ta.valid)

    def test_every_user_keeps_training_ratings(self, tmp_path):
        # user 0 has 2 ratings (below min_user_ratings), user 1 has 10
        path = _write(tmp_path, [0, 0] + [1] * 10, list(range(12)), [3.0] * 12)
        build_matrices(path, tmp_path / "m", valid_fraction=0.3, min_user_ratings=5)
        data = load_matrices(tmp_path / "m")
        assert np.bincount(data.train.users).tolist() == [2, 7]
        assert np.bincount(data.valid.users, minlength=2).tolist() == [0, 3]

    @pytest.mark.parametrize("kwargs", [{"valid_fraction": 1.0}, {"valid_fraction": -0.1},
                                        {"min_user_ratings": 1}])
    def test_bad_settings_are_named(self, tmp_path, kwargs):
        path = _write(tmp_path, [1], [1], [1.0])
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            build_matrices(path, tmp_path / "m", **kwargs)

    def test_empty_input(self, tmp_path):
        path = _write(tmp_path, pl.Series([], dtype=pl.Int64), pl.Series([], dtype=pl.Int64),
                      pl.Series([], dtype=pl.Float32))
        with pytest.raises(ValueError, match="no ratings"):
            build_matrices(path, tmp_path / "m")


@pytest.fixture
def small_steps(monkeypatch):
    """Encode, sort and split a few rows at a time."""
    import factorflow.stages.build as matrix
    import factorflow.engine.split as split

    monkeypatch.setattr(matrix, "ENCODE_ROWS", 7)
    monkeypatch.setattr(matrix, "SORT_ROWS", 9)
    monkeypatch.setattr(split, "SPLIT_ROWS", 10)


class TestBoundedBuild:
    def test_same_artifacts_as_one_pass(self, tmp_path, small_steps):
        rng = np.random.default_rng(5)
        pairs = rng.permutation([(u, i) for u in range(30) for i in range(12) if (u * i) % 5])
        users = [f"user-{u:02d}" for u in pairs[:, 0]]
        items = pairs[:, 1].astype(np.int64) * 1000
        ratings = rng.integers(1, 6, len(pairs)).astype(np.float32)
        build_matrices(_write(tmp_path, users, items, ratings), tmp_path / "m", seed=2)
        got = load_matrices(tmp_path / "m")
        # One pass: sorted ids, triplets sorted by (user, item), the lexsort split.
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        order = np.lexsort((i, u))
        u, i, r = u[order].astype(np.int32), i[order].astype(np.int32), ratings[order]
        held = reference_split(u, len(user_ids), 0.1, 5, 2)
        assert got.user_ids.to_list() == user_ids.tolist()
        assert got.item_ids.to_list() == item_ids.tolist()
        for part, mask in ((got.train, ~held), (got.valid, held)):
            for field, want in zip(part, (u[mask], i[mask], r[mask])):
                np.testing.assert_array_equal(field, want)
                assert field.dtype == want.dtype

    def test_id_files_keep_their_schema(self, small_ratings_parquet, tmp_path):
        build_matrices(small_ratings_parquet, tmp_path)
        users = pl.read_parquet(tmp_path / "users.parquet")
        assert users.columns == ["user_index", "user_id"]
        assert users["user_index"].dtype == pl.Int32
        assert users["user_index"].to_list() == list(range(users.height))

    def test_progress_lines_go_to_log(self, tmp_path, small_steps):
        path = _write(tmp_path, [1, 2, 3] * 8, list(range(24)), [3.0] * 24)
        lines: list[str] = []
        build_matrices(path, tmp_path / "m", log=lines.append)
        assert lines == ["build: rows encoded 24 / 24 (100.0%) in 0 s",
                         "build: rows sorted 24 / 24 (100.0%) in 0 s",
                         "build: rows split 24 / 24 (100.0%) in 0 s"]

    @pytest.mark.parametrize("column", ["user_id", "item_id"])
    def test_null_ids_are_named(self, tmp_path, column):
        ids = {"user_id": [1, 2, 3], "item_id": [4, 5, 6]}
        ids[column] = [1, None, 3]
        path = _write(tmp_path, ids["user_id"], ids["item_id"], [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match=f"null {column} in .*validate"):
            build_matrices(path, tmp_path / "m")


def damage(path, how: str) -> None:
    """Truncate ``path`` to half its bytes, or fill it with garbage of the same length."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "half" else b"\x00garbage\xff" * max(
        1, len(data) // 9))


def copy_matrix(small_model, tmp_path):
    """A private copy of the session's matrix directory, free to damage."""
    import shutil

    return shutil.copytree(small_model["matrix_dir"], tmp_path / "matrix")


class TestDamagedArtifacts:
    """A truncated or garbage artifact: one error naming it and the task to clear, never retried."""

    @pytest.mark.parametrize("how", ["half", "garbage"])
    def test_a_damaged_ratings_file_names_the_extract_task(self, small_ratings_parquet, tmp_path,
                                                           how):
        from factorflow.airflow.failures import classify
        from factorflow.engine.artifacts import ArtifactError

        path = tmp_path / "ratings.parquet"
        path.write_bytes(small_ratings_parquet.read_bytes())
        damage(path, how)
        with pytest.raises(ArtifactError) as info:
            build_matrices(path, tmp_path / "m")
        assert str(info.value) == (f"{path} is not a readable Parquet file (truncated?): "
                                   "clear the `extract` task to write it again")
        assert classify(info.value) == "deterministic"
        assert not (tmp_path / "m" / "matrix.json").exists()

    @pytest.mark.parametrize("how", ["half", "garbage"])
    @pytest.mark.parametrize("name, kind", [("train.npz", ".npz"), ("valid.npz", ".npz"),
                                            ("users.parquet", "Parquet file"),
                                            ("items.parquet", "Parquet file"),
                                            ("matrix.json", "JSON file")])
    def test_each_damaged_matrix_file_names_the_build_task(self, small_model, tmp_path, name,
                                                           kind, how):
        from factorflow.engine.artifacts import ArtifactError

        matrix = copy_matrix(small_model, tmp_path)
        damage(matrix / name, how)
        with pytest.raises(ArtifactError) as info:
            load_matrices(matrix)
        assert str(info.value) == (f"{matrix / name} is not a readable {kind} (truncated?): "
                                   "clear the `build` task to write it again")

    def test_a_missing_array_is_named(self, small_model, tmp_path):
        from factorflow.engine.artifacts import ArtifactError

        matrix = copy_matrix(small_model, tmp_path)
        np.savez(matrix / "train.npz", users=np.zeros(3, np.int32))
        with pytest.raises(ArtifactError, match=r"train.npz lacks the arrays \['items', "
                                                r"'ratings'\]: clear the `build` task"):
            load_matrices(matrix)


class TestAtomicWrites:
    def test_a_killed_attempts_temp_files_are_replaced_not_read(self, small_ratings_parquet,
                                                                tmp_path):
        out = tmp_path / "m"
        out.mkdir()
        for name in ("train.npz", "valid.npz", "users.parquet", "items.parquet", "matrix.json"):
            (out / f"{name}.tmp").write_bytes(b"half of a killed attempt's file")
        build_matrices(small_ratings_parquet, out, seed=3)
        assert sorted(p.name for p in out.iterdir()) == [
            "items.parquet", "matrix.json", "train.npz", "users.parquet", "valid.npz"]
        reference = build_matrices(small_ratings_parquet, tmp_path / "clean", seed=3)
        got, want = load_matrices(out), load_matrices(tmp_path / "clean")
        assert got.summary["n_train"] == reference["n_train"]
        for x, y in zip(got.train, want.train):
            np.testing.assert_array_equal(x, y)

    def test_a_writer_killed_mid_file_leaves_the_previous_file_whole(self, tmp_path):
        """A real process killed while writing: the final name keeps the complete old file."""
        import signal
        import subprocess
        import sys

        from factorflow.engine.triplets import Triplets

        path = tmp_path / "train.npz"
        old = Triplets(np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int32),
                       np.ones(5, np.float32))
        old.save(path)
        code = ("import sys; from factorflow.engine.artifacts import replacing\n"
                "with replacing(sys.argv[1]) as tmp:\n"
                "    tmp.write_bytes(b'PK half an archive')\n"
                "    print('writing', flush=True); sys.stdin.read()\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert (tmp_path / "train.npz.tmp").exists()  # the killed try's leftover
        for got, want in zip(Triplets.load(path), old):
            np.testing.assert_array_equal(got, want)
        Triplets(*(a[:2] for a in old)).save(path)  # the next try
        assert len(Triplets.load(path)) == 2 and not (tmp_path / "train.npz.tmp").exists()
