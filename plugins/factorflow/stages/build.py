"""Build: ratings table -> id maps, a seeded train/validation split, COO triplets.

Original ids (integers or strings such as UUIDs) are mapped to contiguous
``int32`` indices; the maps are kept as Parquet so that published tables carry
the ids exactly as the warehouse gave them.

Every artifact is written to a temporary file and renamed into place, and
``matrix.json`` last: a killed try leaves no half file for the next task.
Reading one back that is truncated or garbage raises an
:class:`~factorflow.engine.artifacts.ArtifactError` naming it and the task to clear.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from factorflow.stages.progress import Progress
from factorflow.engine.split import MIN_USER_RATINGS, split_mask
from factorflow.engine.triplets import Triplets
from factorflow.engine.artifacts import reading, replacing

logger = logging.getLogger(__name__)

TRAIN_FILE = "train.npz"
VALID_FILE = "valid.npz"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
SUMMARY_FILE = "matrix.json"

#: Rows read and encoded at a time (one progress update each).
ENCODE_ROWS = 1_000_000
#: About how many ratings are sorted at a time (one progress update each).
SORT_ROWS = 2_000_000


def build_matrices(
    ratings_path: str | Path,
    out_dir: str | Path,
    *,
    valid_fraction: float = 0.1,
    min_user_ratings: int = MIN_USER_RATINGS,
    seed: int = 0,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Map ids, split train/validation and write the matrix artifacts, in bounded memory.

    Every user with at least ``min_user_ratings`` ratings has
    ``floor(valid_fraction * n_u)`` of them (chosen by a seeded shuffle) moved to
    validation; the rest, and all ratings of lighter users, stay in train, so
    every user keeps at least one training rating.

    Memory holds the id maps (users + items) and the ratings at 12 bytes each
    (user and item index, value), about 30 bytes a rating at the peak while
    sorting; never the table's other columns, nor a copy of the table.

    Args:
        ratings_path: Parquet file with columns ``user_id, item_id, rating``.
        out_dir: directory for ``train.npz``, ``valid.npz``, ``users.parquet``,
            ``items.parquet`` and ``matrix.json``.
        valid_fraction: share of each eligible user's ratings held out, in [0, 1).
        min_user_ratings: users with fewer ratings are kept whole in train.
        seed: seed of the split.
        log: where progress lines go (rows done / total, rate, ETA).

    Returns:
        A small JSON-safe summary: counts and artifact paths.

    Raises:
        ArtifactError: ``ratings_path`` is not a readable Parquet file (clear ``extract``).
        ValueError: a setting is out of range, the file has no ratings, or an
            id is null (the validate stage reports those).
        DiskFullError: the disk filled while writing an artifact (named, with the
            space that was free); nothing half-written is left.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if min_user_ratings < 2:
        raise ValueError(f"min_user_ratings must be >= 2, got {min_user_ratings}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_ratings_file(ratings_path)

    user_ids, item_ids = _id_maps(ratings_path)
    write_ids(user_ids, "user_index", out / USERS_FILE)
    write_ids(item_ids, "item_index", out / ITEMS_FILE)
    u, i, r = _sorted_triplets(ratings_path, user_ids, item_ids, log)
    splitting = Progress("build: rows split", len(r), log)
    is_valid = split_mask(u, len(user_ids), valid_fraction, min_user_ratings, seed,
                          on_rows=splitting.update)
    n_valid = int(is_valid.sum())
    Triplets(u[is_valid], i[is_valid], r[is_valid]).save(out / VALID_FILE)
    is_train = np.logical_not(is_valid, out=is_valid)
    Triplets(u[is_train], i[is_train], r[is_train]).save(out / TRAIN_FILE)

    summary = {
        "matrix_dir": str(out),
        "n_users": len(user_ids),
        "n_items": len(item_ids),
        "n_ratings": len(r),
        "n_train": len(r) - n_valid,
        "n_valid": n_valid,
        "density": len(r) / (len(user_ids) * len(item_ids)),
        "rating_mean": float(r.mean()),
        "rating_min": float(r.min()),
        "rating_max": float(r.max()),
        "seed": seed,
        "valid_fraction": valid_fraction,
    }
    with replacing(out / SUMMARY_FILE) as tmp:  # last: the matrix is complete
        tmp.write_text(json.dumps(summary, indent=2))
    return summary


def _check_ratings_file(ratings_path: str | Path) -> None:
    """Fail with an ``ArtifactError`` naming the file when its Parquet footer and
    rating columns cannot be read (a truncated or overwritten extract)."""
    import pyarrow.parquet as pq

    with reading(ratings_path, task="extract"):
        names = pq.read_metadata(ratings_path).schema.to_arrow_schema().names
    missing = [c for c in ("user_id", "item_id", "rating") if c not in names]
    if missing:
        raise ValueError(f"{ratings_path} has no column(s) {missing}: run the validate stage, "
                         "which names what the source lacks")


def _id_maps(ratings_path: str | Path) -> tuple[Any, Any]:
    """The sorted distinct user and item ids (polars Series): position = index."""
    import polars as pl

    scan = pl.scan_parquet(ratings_path)
    found = pl.collect_all([scan.select(pl.col(c).unique().sort()) for c in ("user_id", "item_id")],
                           engine="streaming")
    user_ids, item_ids = (frame.to_series() for frame in found)
    if user_ids.len() == 0:
        raise ValueError(f"no ratings in {ratings_path}")
    for ids in (user_ids, item_ids):
        if ids.null_count():
            raise ValueError(f"null {ids.name} in {ratings_path}: run the validate stage, "
                             "which names the rows")
    return user_ids, item_ids


def write_ids(ids: Any, index_name: str, path: Path) -> None:
    """``[index_name (int32), id]`` rows: the id of each index (``ids``: a named polars Series)."""
    import polars as pl

    index = pl.int_range(pl.len(), dtype=pl.Int32).alias(index_name)
    with replacing(path) as tmp:
        ids.to_frame().select(index, ids.name).write_parquet(tmp)


def _encode(ratings_path: str | Path, user_ids: Any, item_ids: Any,
            log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray]:
    """``([n] int64 user_index * n_items + item_index, [n] float32 rating)``, in file order.

    The file is read ``ENCODE_ROWS`` rows at a time, so nothing but the two
    output arrays grows with it.
    """
    import polars as pl
    import pyarrow.parquet as pq

    user_index = pl.int_range(user_ids.len(), dtype=pl.Int64, eager=True)
    item_index = pl.int_range(item_ids.len(), dtype=pl.Int64, eager=True)
    key = (pl.col("user_id").replace_strict(user_ids, user_index) * item_ids.len()
           + pl.col("item_id").replace_strict(item_ids, item_index))
    n = pq.read_metadata(ratings_path).num_rows
    keys, ratings = np.empty(n, np.int64), np.empty(n, np.float32)
    encoded, done = Progress("build: rows encoded", n, log), 0
    # pre_buffer=False: the pre-buffered reader keeps what it read until closed.
    with pq.ParquetFile(ratings_path, pre_buffer=False) as source:
        for batch in source.iter_batches(batch_size=ENCODE_ROWS,
                                         columns=["user_id", "item_id", "rating"]):
            part = pl.from_arrow(batch).select(key, pl.col("rating").cast(pl.Float32))
            keys[done:done + part.height] = part.to_series(0).to_numpy()
            ratings[done:done + part.height] = part.to_series(1).to_numpy()
            done += part.height
            encoded.update(done)
    return keys, ratings


def _sorted_triplets(ratings_path: str | Path, user_ids: Any, item_ids: Any,
                     log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n]`` int32 users, int32 items, float32 ratings, sorted by (user, item).

    The ratings are first grouped by ranges of (user, item) keys (a radix sort
    of small range numbers), then each range is sorted: faster than one
    argsort, and a progress line a range. Each step drops the arrays it
    replaces (these names hold the only references): about 30 bytes a rating
    at the peak.
    """
    n_items = item_ids.len()
    keys, ratings = _encode(ratings_path, user_ids, item_ids, log)
    n_ranges = min(max(1, -(-len(keys) // SORT_ROWS)), 1 << 16)
    width = int(keys.max(initial=0)) // n_ranges + 1
    in_range = (keys // width).astype(np.min_scalar_type(n_ranges - 1))
    stops = np.cumsum(np.bincount(in_range, minlength=n_ranges))
    order = np.argsort(in_range, kind="stable")  # radix sort: 8 or 16-bit range numbers
    del in_range
    keys, ratings = keys[order], ratings[order]
    del order
    progress = Progress("build: rows sorted", len(keys), log)
    for start, stop in zip([0, *stops[:-1]], stops):
        within = np.argsort(keys[start:stop])
        keys[start:stop] = keys[start:stop][within]
        ratings[start:stop] = ratings[start:stop][within]
        progress.update(int(stop))
    items = (keys % n_items).astype(np.int32)
    keys //= n_items  # in place: now the user indices
    return keys.astype(np.int32), items, ratings


class MatrixArtifacts(NamedTuple):
    """Everything ``build_matrices`` wrote, loaded back."""

    train: Triplets
    valid: Triplets
    user_ids: Any  # polars Series of original user ids, position = index
    item_ids: Any  # polars Series of original item ids, position = index
    summary: dict[str, Any]


def read_summary(matrix_dir: str | Path) -> dict[str, Any]:
    """``matrix.json``: the counts of :func:`build_matrices`.

    Raises:
        ArtifactError: it is not a readable JSON object (clear ``build``).
    """
    path = Path(matrix_dir) / SUMMARY_FILE
    with reading(path, task="build"):
        summary = json.loads(path.read_text())
        if not isinstance(summary, dict) or "n_users" not in summary:
            raise ValueError("not the build's summary")
    return summary


def read_ids(path: str | Path, column: str) -> Any:
    """The ``column`` (``user_id`` or ``item_id``) of an id map, as a polars Series.

    Raises:
        ArtifactError: the file is not a readable id map (clear ``build``).
    """
    import polars as pl

    with reading(path, task="build"):
        return pl.read_parquet(path, columns=[column])[column]


def load_matrices(matrix_dir: str | Path) -> MatrixArtifacts:
    """Read back the artifacts of :func:`build_matrices`.

    Raises:
        ArtifactError: one of them is truncated or garbage; the message names
            it and says to clear the ``build`` task.
    """
    d = Path(matrix_dir)
    summary = read_summary(d)
    with reading(d / TRAIN_FILE, task="build"):
        train = Triplets.load(d / TRAIN_FILE)
    with reading(d / VALID_FILE, task="build"):
        valid = Triplets.load(d / VALID_FILE)
    return MatrixArtifacts(train=train, valid=valid, user_ids=read_ids(d / USERS_FILE, "user_id"),
                           item_ids=read_ids(d / ITEMS_FILE, "item_id"), summary=summary)
