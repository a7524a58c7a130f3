"""Compiled programs kept whole, so that a new process runs them without tracing.

JAX's persistent compilation cache (:mod:`factorflow.engine.runtime.cache`) saves XLA's
compile, but every new process still traces and lowers each program and
compiles each eager operation it meets, which on a small data set costs more
than many Gibbs sweeps. :func:`load`
keeps the *executable* itself (``jax.experimental.serialize_executable``),
keyed by everything that shapes it: the program's name, its static arguments,
the arguments' tree, shapes and dtypes, the jax/jaxlib versions, the backend
and devices, ``XLA_FLAGS``, x64 mode and a digest of factorflow's own source
files. A hit is one file read and a deserialization (milliseconds); a miss
compiles as usual and saves the result (written atomically). A file that cannot
be read back is compiled again, never fatal.

Only programs whose static arguments are factorflow's own are stored on disk:
a user's loss could change without its name changing; those compile in every
process as before (and are still kept for the rest of the process).

The store lives in ``<compilation cache>/factorflow-programs`` and is off when
the compilation cache is off. It holds machine code loaded with pickle, so
whoever can write it can run code as the worker: it is created 0700 (entries
0600), and, as ssh does with loose key files, a store directory or entry owned
by another user (root aside) or writable by group or others is not loaded: one
warning says why and what to run, and the program is compiled instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from factorflow.engine.runtime.trust import trusted

log = logging.getLogger(__name__)

#: In-process programs by key (disk or not), with the static values they were
#: compiled for: holding those keeps an unstable value's ``repr`` address (part
#: of its key) from being reused by another object while the entry lives.
_LOADED: dict[str, tuple[Any, tuple]] = {}
SUBDIR = "factorflow-programs"


@functools.cache
def _source_digest() -> str:
    """Digest of every ``.py`` file of the factorflow package (code changes miss)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def store_dir() -> Path | None:
    """The directory of stored programs, or None when JAX's compilation cache is off."""
    import jax

    cache = jax.config.jax_compilation_cache_dir
    return Path(cache) / SUBDIR if cache else None


def _stable(value: Any) -> str | None:
    """A process-independent name for a static value, None when it has none.

    Functions are named by module and qualified name, only factorflow's own;
    other values by their ``repr`` unless it holds a memory address.
    """
    if callable(value):
        module = getattr(value, "__module__", None) or ""
        qualname = getattr(value, "__qualname__", None)
        if qualname and module.startswith("factorflow."):
            return f"{module}.{qualname}"
        return None
    text = repr(value)
    return None if " at 0x" in text else text


def program_key(name: str, args: tuple, static: dict[str, Any],
                options: dict[str, Any] | None = None) -> str:
    """A hex key for program ``name`` called with ``args`` and ``static`` settings.

    Args:
        name: the program's stable name, e.g. ``"sampling.half_step"``.
        args: the positional arguments (a pytree of arrays).
        static: static keyword arguments (values without a stable name are
            keyed by their ``repr``, valid in this process only).
        options: XLA compiler options the program is compiled with.
    """
    import jax
    import jaxlib

    leaves, tree = jax.tree_util.tree_flatten(args)
    device = jax.devices()[0]
    parts = [
        name, repr([(k, _stable(v) or repr(v)) for k, v in sorted(static.items())]), str(tree),
        repr([(tuple(x.shape), str(x.dtype)) for x in leaves]),
        jax.__version__, jaxlib.__version__, device.platform, device.device_kind,
        str(jax.device_count()), os.environ.get("XLA_FLAGS", ""),
        str(jax.config.jax_enable_x64), _source_digest(), repr(sorted((options or {}).items())),
    ]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def load(fn: Callable, args: tuple, *, name: str, static: dict[str, Any] | None = None,
         options: dict[str, Any] | None = None) -> Callable:
    """The compiled ``fn(*args, **static)`` for arguments shaped like ``args``.

    Args:
        fn: a ``jax.jit``-wrapped function whose static arguments are ``static``.
        args: example positional arguments (their shapes and dtypes are compiled for).
        name: a stable name for the key (the function's module and name).
        static: static keyword arguments, passed to ``fn.lower``. The program is
            kept on disk only when each has a stable name (see :func:`_stable`).
        options: XLA compiler options (``Lowered.compile(compiler_options=...)``),
            part of the key.

    Returns:
        A callable taking arguments shaped like ``args`` (no static keywords).
    """
    static, options = static or {}, options or {}
    key = program_key(name, args, static, options)
    if key in _LOADED:
        return _LOADED[key][0]
    persist = all(_stable(v) is not None for v in static.values())
    directory = store_dir() if persist else None
    if directory is not None and not trusted(directory, directory):
        directory = None  # never loaded while loose, so nothing is written there either
    path = None if directory is None else directory / f"{key}.bin"
    compiled = (_read(path) if path is not None and path.exists() and trusted(path, directory)
                else None)
    if compiled is None:
        compiled, fresh = _compile(fn, args, static, options, f"{name}_{key[:16]}")
        if path is not None and not fresh:  # this store lost it; JAX's cache had it
            compiled, fresh = _compile(fn, args, static, options,
                                       f"{name}_{os.urandom(6).hex()}")
        if path is not None and fresh:
            _write(path, compiled)
    _LOADED[key] = compiled, tuple(static.values())
    return compiled


_CACHE_HIT = "/jax/compilation_cache/cache_hits"
_COMPILING = threading.Lock()


def _compile(fn: Callable, args: tuple, static: dict[str, Any], options: dict[str, Any],
             label: str):
    """``(compiled, fresh)``: ``fresh`` False when JAX's cache supplied it.

    An executable JAX loaded from its persistent cache serializes without its
    kernels (running the copy fails with "Function ... not found", jax 0.10.2),
    so only a fresh compile is stored. The program is named after its key
    (``jit_<label>``), so JAX's cache cannot hold it unless this store lost it;
    then :func:`load` compiles it once more under a one-off name.
    """
    import jax

    def program(*a):
        return fn(*a, **static)

    program.__name__ = program.__qualname__ = "".join(
        c if c.isalnum() else "_" for c in label)
    hits: list[str] = []

    def listen(event: str, **_: Any) -> None:
        if event == _CACHE_HIT:
            hits.append(event)

    # JAX's events are process-wide: one compile at a time, so that a cache hit
    # heard here is this compile's (stored programs still load in parallel).
    with _COMPILING:
        jax.monitoring.register_event_listener(listen)
        try:
            compiled = jax.jit(program).lower(*args).compile(compiler_options=options or None)
        finally:
            jax.monitoring.unregister_event_listener(listen)
    return compiled, not hits


def _read(path: Path):
    from jax.experimental.serialize_executable import deserialize_and_load

    try:
        lapack, payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        if lapack:  # its kernels are bound when a program using them is lowered
            bind_lapack()
        return deserialize_and_load(payload, in_tree, out_tree)
    except Exception as err:  # damaged, truncated or from another build: compile again
        log.info("ignoring stored program %s (%s: %s)", path.name, type(err).__name__, err)
        return None


def bind_lapack() -> None:
    """Bind JAX's CPU LAPACK kernels, as lowering a program that uses them does.

    JAX takes the kernels from SciPy's ``scipy.linalg.cython_blas`` and
    ``cython_lapack`` extension modules; importing them the usual way first runs
    ``scipy.linalg``'s package ``__init__``, which costs more than many Gibbs
    sweeps of a small data set. The two extension modules
    are loaded here from their files on their own, under their own names, for
    JAX to read, then taken out of ``sys.modules`` again so that a later
    ``import scipy.linalg`` binds them the usual way (the same, already loaded
    shared objects). Anything unexpected falls back to JAX's own binding.
    """
    import importlib.util
    import sys

    from jax._src.lax import linalg

    added = []
    try:
        spec = importlib.util.find_spec("scipy")
        folder = Path(next(iter(spec.submodule_search_locations))) / "linalg"
        for part in ("cython_blas", "cython_lapack"):
            name = f"scipy.linalg.{part}"
            if name in sys.modules:
                continue
            (path,) = folder.glob(f"{part}.*.so")
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            sys.modules[name] = module
            added.append(name)
    except Exception as err:  # another SciPy layout: JAX's way, only slower
        log.debug("binding LAPACK through scipy.linalg (%s: %s)", type(err).__name__, err)
    try:
        linalg.initialize_lapack()
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _write(path: Path, compiled) -> None:
    from jax.experimental.serialize_executable import serialize

    tmp = None
    try:
        lapack = "lapack" in compiled.as_text()
        blob = pickle.dumps((lapack, *serialize(compiled)), protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # mode 0600
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
        tmp = None
    except Exception as err:  # a read-only or full disk only costs the next process a compile
        log.info("could not store program %s (%s: %s)", path.name, type(err).__name__, err)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
