"""What a DAG run's conf may point at: files under allowed folders, losses from allowed modules.

Airflow trusts DAG authors but not the people who trigger runs, and a conf
names things the worker acts on: the DuckDB warehouse file (created if
missing), a CSV/Parquet source or glob (its rows are published) and a
``module:function`` loss (importing runs the module). The deployment, not the
conf, decides what is reachable:

* ``FACTORFLOW_DATA_ROOTS``: folders (``os.pathsep``-separated) that DuckDB
  warehouse paths and file sources must lie in, after resolving ``..`` and
  symlinks. Unset or blank: the project's ``data/`` folder and the folder of
  ``$FACTORFLOW_WAREHOUSE``.
* ``FACTORFLOW_LOSS_MODULES``: comma-separated module prefixes a custom loss
  may come from (``mylosses`` allows ``mylosses.sub:fn``, not
  ``mylossesX:fn``). Unset: only the built-in losses.

Plain functions (no Airflow import): the operators call them at each task's
start, and the Params build the loss pattern from them when a DAG is parsed.
The library and the ``factorflow`` CLI serve trusted users and stay unconfined;
so do the files of admin-defined Airflow connections.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from factorflow.paths import PROJECT_DIR
from factorflow.stages.extract import file_reader
from factorflow.choices import LOSS_NAMES

DATA_ROOTS = "FACTORFLOW_DATA_ROOTS"
LOSS_MODULES = "FACTORFLOW_LOSS_MODULES"
#: Characters that make a path a glob for DuckDB (or Python's glob).
_MAGIC = re.compile(r"[*?\[{]")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_NAME}(\.{_NAME})*")


class Refused(ValueError):
    """A conf value outside what the deployment allows; retrying cannot help."""


def data_roots(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders conf paths must lie in, each resolved (realpath).

    Args:
        environ: the environment to read (default ``os.environ``, read per call
            so a worker's own settings apply).

    Raises:
        ValueError: an entry of ``FACTORFLOW_DATA_ROOTS`` is not absolute.
    """
    env = os.environ if environ is None else environ
    entries = [e.strip() for e in env.get(DATA_ROOTS, "").split(os.pathsep) if e.strip()]
    if not entries:
        entries = [str(PROJECT_DIR / "data")]
        if env.get("FACTORFLOW_WAREHOUSE"):  # the admin's own default keeps working
            entries.append(os.path.dirname(os.path.abspath(env["FACTORFLOW_WAREHOUSE"])))
    for entry in entries:
        if not os.path.isabs(entry):
            raise ValueError(f"{DATA_ROOTS}: {entry!r} is not an absolute path")
    return tuple(Path(os.path.realpath(entry)) for entry in entries)


def _inside(path: str, roots: Sequence[Path]) -> bool:
    """Whether ``path`` resolves (realpath) into one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(root) for root in roots)


def _resolved(path: str) -> str:
    """``path``, with where it really leads when ``..`` or a symlink changes that."""
    real = os.path.realpath(path)
    return path if real == path else f"{path} (resolves to {real})"


def _refused(param: str, what: str, roots: Sequence[Path]) -> Refused:
    listed = os.pathsep.join(map(str, roots)) or "empty"
    return Refused(f"param {param}: {what} is outside {DATA_ROOTS} ({listed}); add its "
                   f"folder to {DATA_ROOTS} on the workers to allow it")


def check_path(param: str, path: str, roots: Sequence[Path] | None = None) -> None:
    """Refuse a file path or glob that reaches outside the data roots.

    A path must resolve (``..`` and symlinks followed, even dangling ones)
    into a root. A glob's fixed leading folder must resolve into a root too,
    it may not climb with ``..`` after that, and every file it matches now
    must resolve into a root (a symlink inside a root can point out). The
    glob's literal name is checked as a path as well, in case DuckDB's glob
    dialect reads a character literally that Python's treats as a pattern.

    Args:
        param: the conf field, named in the message.
        path: an absolute path or glob.
        roots: allowed folders, already resolved (default :func:`data_roots`).

    Raises:
        Refused: naming the param, the value and the setting that allows it.
    """
    roots = data_roots() if roots is None else tuple(roots)
    if not os.path.isabs(path):
        raise Refused(f"param {param}: {path!r} is not an absolute path; give one under "
                      f"{DATA_ROOTS} ({os.pathsep.join(map(str, roots)) or 'empty'})")
    if not _inside(path, roots):
        raise _refused(param, _resolved(path), roots)
    parts = Path(path).parts
    first_magic = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), None)
    if first_magic is None:
        return
    if not _inside(str(Path(*parts[:first_magic])), roots) or ".." in parts[first_magic:]:
        raise _refused(param, f"glob {path}", roots)
    for match in glob.iglob(path, recursive=True, include_hidden=True):
        if not _inside(match, roots):
            raise _refused(param, f"glob {path} matches {_resolved(match)}, which", roots)


def check_source(param: str, source: str, roots: Sequence[Path] | None = None) -> None:
    """Refuse a file source outside the data roots; a ``schema.table`` name passes.

    A source is a file when the library reads it as one
    (:func:`factorflow.stages.extract.file_reader`), whatever the connection.
    """
    if file_reader(source) is not None:
        check_path(param, source, roots)


def loss_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The module prefixes of ``FACTORFLOW_LOSS_MODULES`` (read per call).

    Raises:
        ValueError: an entry is not a dotted module name.
    """
    env = os.environ if environ is None else environ
    prefixes = tuple(p.strip() for p in env.get(LOSS_MODULES, "").split(",") if p.strip())
    for prefix in prefixes:
        if not _MODULE.fullmatch(prefix):
            raise ValueError(f"{LOSS_MODULES}: {prefix!r} is not a module name like "
                             f"'package.module'")
    return prefixes


def loss_pattern(prefixes: Sequence[str]) -> str:
    """The loss Param's pattern: a built-in name, or ``prefix[.sub...]:function``.

    Written so that JSON Schema (ECMA, in the UI) and Python's ``re`` read it
    alike; with no prefixes only the built-in names match.
    """
    choices = "|".join(re.escape(name) for name in LOSS_NAMES)
    if prefixes:
        modules = "|".join(re.escape(prefix) for prefix in prefixes)
        choices += rf"|({modules})(\.{_NAME})*:{_NAME}"
    return rf"^({choices})$"


def loss_choices(prefixes: Sequence[str]) -> str:
    """What a loss may be, as a person reads it (form description and refusals)."""
    builtin = f"a built-in name ({', '.join(LOSS_NAMES)})"
    if not prefixes:
        return f"{builtin}; custom losses are off until {LOSS_MODULES} lists their modules"
    return f"{builtin}, or module:function from {', '.join(prefixes)} ({LOSS_MODULES})"


def check_loss(param: str, spec: Any, prefixes: Sequence[str] | None = None) -> None:
    """Refuse a loss that is neither built in nor from an allowed module.

    Checked again at the train task's start: its worker's environment may
    differ from the one the DAG (and so the Param's pattern) was parsed with,
    and a sweep's ``space`` can name losses the pattern never saw.

    Args:
        param: the conf field, named in the message.
        spec: the loss setting; ``None`` (the engine's default) passes.
        prefixes: allowed module prefixes (default :func:`loss_modules`).

    Raises:
        Refused: naming the param, the value and the setting that allows it.
    """
    if spec is None or spec in LOSS_NAMES:
        return
    prefixes = loss_modules() if prefixes is None else tuple(prefixes)
    if isinstance(spec, str) and re.fullmatch(loss_pattern(prefixes), spec):
        return
    raise Refused(f"param {param}: {spec!r} is not allowed: a loss is {loss_choices(prefixes)}; "
                  f"add its module prefix to {LOSS_MODULES} on the workers to allow it")
