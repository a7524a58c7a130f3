"""Artifact files between tasks: written atomically, read back with an error naming the file.

A killed writer never leaves a half file under the final name, and a file that
cannot be parsed raises :class:`ArtifactError`, naming the file and the task to clear.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
