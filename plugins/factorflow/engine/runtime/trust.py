"""Whether a directory of code-bearing files may be loaded: ssh's rule for key files.

The program store (:mod:`factorflow.engine.runtime.programs`) keeps machine code
loaded with pickle, so whoever can write it can run code as the worker. Its
directory and each entry are checked before a load, as ssh checks a private
key: owned by this process's user (or root) and writable by neither group nor
others. A loose one is logged once, with the command that fixes it, and the
caller compiles instead.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

#: Store directories already warned about in this process (one warning each).
_WARNED: set[Path] = set()


def _looseness(path: Path) -> tuple[str, str] | None:
    """``(what is wrong, what to run)`` when ``path`` may not be trusted, else None.

    Trusted: owned by this process's user or by root (who could run code as it
    anyway), and writable by neither group nor others, as ssh's StrictModes. A
    path that cannot be stat'ed is not refused here: absent, it is created
    private; unreadable, reading it fails on its own.
    """
    try:
        info = path.stat()
    except OSError:
        return None
    uid = os.geteuid()
    if info.st_uid not in (uid, 0):
        return (f"owned by {_user(info.st_uid)}, not by {_user(uid)} who runs this process",
                f"chown -R {_user(uid)} {path}")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = " and ".join(w for w, bit in (("group", 0o020), ("others", 0o002)) if mode & bit)
        private = 700 if path.is_dir() else 600
        return f"mode {mode:o}: writable by {who}", f"chmod {private} {path}"
    return None


def _user(uid: int) -> str:
    """The name of user ``uid`` (its number when it has none)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def trusted(path: Path, directory: Path) -> bool:
    """Whether stored programs may be loaded from ``path`` (the store or an entry of it).

    The first loose path of a store is logged once per process, naming it, what
    was found and the command that makes it private; then every load compiles.
    """
    found = _looseness(path)
    if found is None:
        return True
    if directory not in _WARNED:
        _WARNED.add(directory)
        log.warning("not loading compiled programs from %s: %s; whoever can write it can run "
                    "code as this process, so programs are compiled instead. To use the store, "
                    "make it private (%s) or delete it (it is rebuilt)", path, *found)
    return False
