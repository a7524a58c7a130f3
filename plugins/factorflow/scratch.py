"""Scratch directories that a killed process does not leave behind for good.

A ``TemporaryDirectory`` is removed when its block ends, but not when the
process is SIGKILLed (a task killed by Airflow, the out-of-memory killer, a
lost worker): the directory stays, often holding a copy of the ratings. Each
scratch directory here carries the host and process id that made it, and the
next one made in the same place removes those whose process is gone.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _host() -> str:
    """This machine's name, made safe for a file name (no ``-``: it separates fields)."""
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_abandoned(parent: str | Path, prefix: str) -> list[Path]:
    """Remove the ``prefix`` scratch directories in ``parent`` whose process is gone.

    Only directories made on this host are judged (a process id means nothing
    on another machine sharing the folder); a name that does not parse is left.

    Returns:
        The directories removed.
    """
    removed = []
    host = _host()
    for path in Path(parent).glob(f"{prefix}*"):
        fields = path.name[len(prefix):].split("-")
        if len(fields) < 3 or fields[0] != host or not fields[1].isdigit():
            continue
        if path.is_dir() and not _process_exists(int(fields[1])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextmanager
def scratch_dir(parent: str | Path | None, prefix: str) -> Iterator[Path]:
    """A new directory ``<parent>/<prefix><host>-<pid>-<random>``, removed when the block ends.

    Directories of the same ``prefix`` left in ``parent`` by processes of this
    host that no longer exist are removed first.

    Args:
        parent: where to make it; None: the system's temporary directory.
        prefix: names this kind of scratch, e.g. ``".factorflow-validate-"``.
    """
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    remove_abandoned(parent, prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{_host()}-{os.getpid()}-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
