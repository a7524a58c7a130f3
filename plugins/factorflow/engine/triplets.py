"""Observed ratings in COO form (``Triplets``) and the dense masked-matrix form.

Also how the engine's ``.npz`` artifacts are written and read back: atomically
(a killed writer never leaves a half file under the final name) and with an
:class:`ArtifactError` naming the file when one cannot be read.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

#: How :class:`ArtifactError` names a file it could not parse, by suffix.
_KINDS = {".npz": ".npz", ".parquet": "Parquet file", ".json": "JSON file"}


class ArtifactError(ValueError):
    """A file one task left for the next cannot be read: truncated, garbage, arrays missing.

    The same file fails the same way on every try, so it is a ``ValueError``
    (:mod:`factorflow.airflow.failures` does not retry it); the message names the
    file and, when known, the task to clear so that it is written again.

    Attributes:
        path: the file.
        problem: what is wrong with it, e.g. ``"is not a readable .npz (truncated?)"``.
        task: the task that writes it (``extract``, ``build``, ``train``), or None.
    """

    def __init__(self, path: str | Path, problem: str, task: str | None = None):
        self.path, self.problem, self.task = str(path), problem, task
        todo = f"clear the `{task}` task to write it again" if task else "write it again"
        super().__init__(f"{path} {problem}: {todo}")


@contextmanager
def reading(path: str | Path, *, task: str | None = None) -> Iterator[None]:
    """Turn a failure to parse ``path`` inside the block into an :class:`ArtifactError`.

    A system error (an ``OSError`` with an errno: the file is missing, not
    permitted, the disk failed) passes through unchanged, as does running out
    of memory: those are not the file's content. An ``ArtifactError`` raised
    inside without a task gets ``task``.
    """
    try:
        yield
    except ArtifactError as exc:
        if task is None or exc.task is not None:
            raise
        raise ArtifactError(exc.path, exc.problem, task) from exc.__cause__
    except Exception as exc:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno is not None):
            raise
        kind = _KINDS.get(Path(path).suffix, "artifact")
        raise ArtifactError(path, f"is not a readable {kind} (truncated?)", task) from exc


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; moved over ``path`` when the block succeeds.

    ``os.replace`` within one directory is atomic, so readers (and the next try
    of a killed task) see the previous file or the complete new one, never a
    half-written one. The temporary name is fixed (``<name>.tmp``), so a killed
    try's leftover is overwritten by the next, not accumulated; a failed block
    removes it.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as written:  # on disk before the rename makes it visible
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to the ``.npz`` file ``path`` atomically (see :func:`replacing`)."""
    with replacing(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **arrays)  # a file object: no ".npz" appended to the temporary name


def load_npz(path: str | Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path``, read into memory (no pickling).

    Raises:
        ArtifactError: the file is not a readable ``.npz`` or lacks a ``required`` array.
        FileNotFoundError: there is no such file.
    """
    with reading(path):
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):  # a bare .npy
                raise ValueError("not an .npz archive")
            arrays = {name: data[name] for name in data.files}  # every member's CRC checked
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ArtifactError(path, f"lacks the arrays {missing}")
    return arrays


class Triplets(NamedTuple):
    """Observed ratings in COO form.

    Attributes:
        users: ``[n]`` int32 user indices.
        items: ``[n]`` int32 item indices.
        ratings: ``[n]`` float32 rating values.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def __len__(self) -> int:  # the number of ratings, not of fields
        return int(self.ratings.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the three arrays to an ``.npz`` file (no pickling), atomically."""
        save_npz(path, users=self.users, items=self.items, ratings=self.ratings)

    @classmethod
    def load(cls, path: str | Path) -> "Triplets":
        """Read triplets written by :meth:`save`.

        Raises:
            ArtifactError: the file is not a readable ``.npz`` of triplets.
        """
        data = load_npz(path, ("users", "items", "ratings"))
        with reading(path):
            triplets = cls(users=data["users"].astype(np.int32, copy=False),
                           items=data["items"].astype(np.int32, copy=False),
                           ratings=data["ratings"].astype(np.float32, copy=False))
        if not (triplets.users.shape == triplets.items.shape == triplets.ratings.shape
                and triplets.ratings.ndim == 1):
            raise ArtifactError(path, "holds arrays of different lengths")
        return triplets

    @classmethod
    def concat(cls, *parts: "Triplets") -> "Triplets":
        """All ratings of ``parts`` in one set of triplets."""
        return cls(*(np.concatenate(arrays) for arrays in zip(*parts)))


def _make_triplets(cls, iterable) -> Triplets:
    # NamedTuple's own _make (behind _replace) checks len(), which for Triplets
    # counts ratings; check the number of fields instead. (Assigned after the
    # class is built: NamedTuple forbids defining _make in its body.)
    fields = tuple(iterable)
    if tuple.__len__(fields) != 3:
        raise TypeError(f"Triplets takes 3 arrays, got {tuple.__len__(fields)}")
    return tuple.__new__(cls, fields)


Triplets._make = classmethod(_make_triplets)


def to_dense(triplets: Triplets, *, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The classic masked-matrix form of a set of ratings.

    Args:
        triplets: ratings in COO form.
        n_users: number of rows.
        n_items: number of columns.

    Returns:
        ``(values, mask)``, both ``[n_users, n_items]``: float32 ratings with 0
        where unobserved, and a boolean mask of observed entries.
    """
    if len(triplets) and (triplets.users.max() >= n_users or triplets.items.max() >= n_items):
        raise ValueError(
            f"triplets index past the matrix shape ({n_users}, {n_items}): "
            f"max user {triplets.users.max()}, max item {triplets.items.max()}"
        )
    values = np.zeros((n_users, n_items), np.float32)
    mask = np.zeros((n_users, n_items), bool)
    values[triplets.users, triplets.items] = triplets.ratings
    mask[triplets.users, triplets.items] = True
    return values, mask


def check_fit_inputs(train: Triplets, valid: Triplets | None, *, n_users: int,
                     n_items: int) -> tuple[Triplets, Triplets | None]:
    """A fit's ratings as NumPy arrays, after checking them; ``valid`` None when empty.

    Raises:
        ValueError: for ``n_users`` or ``n_items`` below 1, an empty ``train``, or
            a set (named ``train``/``valid`` in the message) whose arrays are not
            1-D of one length, whose indices fall outside ``[0, n)``, or whose
            ratings are not finite.
    """
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    if len(train) == 0:
        raise ValueError("train has no ratings")
    train = _checked(train, "train", n_users, n_items)
    if valid is not None:
        valid = _checked(valid, "valid", n_users, n_items)
    return train, valid if valid is not None and len(valid) else None


def _checked(triplets: Triplets, name: str, n_users: int, n_items: int) -> Triplets:
    users, items, ratings = (np.asarray(a) for a in triplets)
    if not (users.ndim == items.ndim == ratings.ndim == 1
            and users.shape == items.shape == ratings.shape):
        raise ValueError(f"{name}: users {users.shape}, items {items.shape}, "
                         f"ratings {ratings.shape} must be 1-D of one length")
    if users.size:
        for index, n, what in ((users, n_users, "user"), (items, n_items, "item")):
            if index.min() < 0 or index.max() >= n:
                raise ValueError(f"{name}: {what} index range [{index.min()}, {index.max()}] "
                                 f"outside [0, {n})")
        if not np.all(np.isfinite(ratings)):
            raise ValueError(f"{name}: ratings contain nan or inf")
    return Triplets(users, items, ratings)
