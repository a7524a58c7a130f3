"""JAX's persistent compilation cache, on by default for factorflow's entry points.

Compiling the training programs takes seconds on a CPU, often more than a fit
of a small data set; the cache keeps compiled programs on disk, so the next
process (the next DAG run, the next ``factorflow fit``) loads them instead.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from pathlib import Path

DEFAULT_DIR = Path.home() / ".cache" / "factorflow" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Point JAX's compilation cache at ``path`` (created if needed).

    Args:
        path: the cache directory. Default: ``$FACTORFLOW_JAX_CACHE``, else
            ``~/.cache/factorflow/jax``; ``"off"`` (or an empty value) disables it.
            A cache the user set up through JAX's own settings is left alone.

    Returns:
        The directory in use, or None when disabled.
    """
    import jax

    if jax.config.jax_compilation_cache_dir:  # configured by the user (JAX_COMPILATION_CACHE_DIR)
        return jax.config.jax_compilation_cache_dir
    chosen = str(path) if path is not None else os.environ.get("FACTORFLOW_JAX_CACHE",
                                                               str(DEFAULT_DIR))
    if chosen.strip().lower() in ("", "off", "0", "false", "none"):
        return None
    try:
        Path(chosen).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop a fit; it only compiles again
    jax.config.update("jax_compilation_cache_dir", chosen)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return chosen


def start_runtime() -> concurrent.futures.Future:
    """Start JAX's backend on a background thread: plugin discovery, then the client.

    Creating it takes a noticeable time, most of it in the search for PJRT
    plugins among the installed packages. Entry points that first read
    their input (``factorflow fit`` its rating files, the train task the build
    stage's matrices) call this before reading, so the two overlap, and take
    the future's result before they fit.

    Returns:
        A future of the devices' platform names. Its ``result()`` raises a
        ``RuntimeError`` naming ``JAX_PLATFORMS`` when the backend cannot start
        (a GPU platform asked for whose JAX plugin is absent, where JAX itself
        only fails an assertion).
    """
    future: concurrent.futures.Future = concurrent.futures.Future()

    def start() -> None:
        try:
            import jax

            future.set_result([d.platform for d in jax.devices()])
        except Exception as exc:  # noqa: BLE001 - handed to whoever takes the result
            platforms = os.environ.get("JAX_PLATFORMS") or "unset"
            error = RuntimeError(
                f"JAX could not start a backend (JAX_PLATFORMS={platforms}): "
                f"{type(exc).__name__}{': ' + str(exc) if str(exc) else ''}; is that "
                "platform's JAX plugin installed (e.g. jax[cuda12] for GPUs)?")
            error.__cause__ = exc
            future.set_exception(error)

    # Not a daemon: a process that exits early (a bad input file) waits for the
    # client instead of stopping the thread inside JAX's C++ start-up, which aborts.
    threading.Thread(target=start, name="factorflow-jax-runtime", daemon=False).start()
    return future
