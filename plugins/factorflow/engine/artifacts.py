"""Artifact files between tasks: written atomically, read back with an error naming the file.

A killed writer never leaves a half file under the final name, a file that
cannot be parsed raises :class:`ArtifactError`, naming the file and the task to
clear, and a write that fills the disk raises :class:`DiskFullError`, naming the
file, the space that was free and what to do, with nothing left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
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


#: errno of a write that found no room: no space left, disk quota exceeded.
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
#: How DuckDB, Polars and Arrow (which keep only the text) and PostgreSQL say so.
DISK_FULL_WORDS = ("no space left on device", "disk quota exceeded", "os error 28",
                   "os error 122")
#: What to do when an artifact does not fit.
ARTIFACTS_TODO = ("free space there or point FACTORFLOW_ARTIFACTS_DIR at a disk with room; "
                  "the task is retried after Airflow's retry delay, and runs again when cleared")


class DiskFullError(OSError):
    """A write ran out of disk space (``ENOSPC``) or quota (``EDQUOT``).

    An ``OSError`` with errno ``ENOSPC``: :mod:`factorflow.airflow.failures`
    keeps Airflow's retries for it, as space may be freed before the next try.

    Attributes:
        path: the file (an artifact, or the warehouse) being written.
        free: bytes that were free on its file system when the write began, or
            None where that cannot be seen from here (a PostgreSQL server).
    """

    def __init__(self, path: str | Path, free: int | None, todo: str):
        self.path, self.free = str(path), free
        room = ("" if free is None else
                f" ({_size(free)} was free in {_existing_dir(path)} when it began)")
        self.message = f"no space left on the device writing {path}{room}: {todo}"
        super().__init__(errno.ENOSPC, self.message)

    def __str__(self) -> str:
        return self.message


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or during, is a full disk.

    Matches an errno (``ENOSPC``, ``EDQUOT``), psycopg's ``DiskFull`` (SQLSTATE
    53100) by class name, or the words DuckDB, Polars and Arrow use, as they
    keep no errno.
    """
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        if ((isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS)
                or type(exc).__name__ == "DiskFull"
                or any(words in str(exc).lower() for words in DISK_FULL_WORDS)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size(n_bytes: int) -> str:
    """``n_bytes`` for a person: ``"64.0 KiB"``, ``"1.9 MiB"``, ``"12.3 GiB"``."""
    for unit in ("KiB", "MiB", "GiB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GiB":
            return f"{n_bytes:,.1f} {unit}"
    raise AssertionError("unreachable")


def _existing_dir(path: str | Path) -> Path:
    """The nearest directory at or above ``path`` that exists (whose file system it is on)."""
    path = Path(path).absolute()
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


@contextmanager
def disk_space(path: str | Path, *, todo: str = ARTIFACTS_TODO,
               local: bool = True) -> Iterator[None]:
    """Turn a full disk met inside the block into a :class:`DiskFullError` naming ``path``.

    Args:
        path: what the block writes, named in the message.
        todo: what the user can do, ending the message.
        local: whether ``path`` is on this machine, so that its free space is
            measured (before the block: what the write had to fit in).
    """
    free = shutil.disk_usage(_existing_dir(path)).free if local else None
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not disk_full(exc):
            raise
        raise DiskFullError(path, free, todo) from exc


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; moved over ``path`` when the block succeeds.

    ``os.replace`` within one directory is atomic, so readers (and the next try
    of a killed task) see the previous file or the complete new one, never a
    half-written one. The temporary name is fixed (``<name>.tmp``), so a killed
    try's leftover is overwritten by the next, not accumulated; a failed block
    removes it, and a full disk raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with disk_space(path):
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
