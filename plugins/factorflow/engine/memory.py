"""Scoring in bounded memory: one working-set budget, its chunk sizes, and the out-of-memory error.

The error is what a step raises when memory runs out anyway.

Scoring a model gathers rows of its factors: ``n`` ratings of a width-``w``
model touch ``n * w`` numbers, ``b`` users against every item build a
``[b, n_items]`` score block. Done at once, that grows with ratings x width or
users x items (at 25M ratings and 140 columns, a 35 GiB gather); done in
chunks sized from :data:`WORKING_SET_BYTES`, scoring needs the model plus this
fixed working set, on a GPU as on the host. Chunks are powers of two, so the
compiled scoring programs come in a handful of shapes.

When memory runs out all the same (the fit itself, a model too wide for the
device), :func:`memory_guard` turns JAX's ``RESOURCE_EXHAUSTED`` and Python's
``MemoryError`` into :class:`OutOfMemoryError`, which says which step ran out
and what to change: a retry on the same worker would only fail again.
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Iterator

#: Scratch bytes one scoring call may use, on the device and on the host.
WORKING_SET_BYTES = 64 << 20

#: float32 numbers per rating a scoring chunk holds: both factor rows, their
#: product before the sum, and the ids and output (4 bytes each).
_PER_RATING_ROWS = 3
_PER_RATING_SCALARS = 3
#: Bytes per (user, item) cell of a top-N block: the float32 scores, their
#: seen-masked copy, the block maxima's pass and top-k's working copy. The
#: block comes out near 16 MiB, small enough to stay in a CPU's cache.
_PER_CELL = 4 * 4


def _floor_pow2(n: int) -> int:
    """The largest power of two <= ``max(n, 1)``."""
    return 1 << (max(int(n), 1).bit_length() - 1)


def ratings_per_chunk(width: int, *, budget: int | None = None) -> int:
    """Ratings scored per call so a width-``width`` model stays within ``budget`` bytes.

    A power of two, at least 1: at the default budget 262,144 ratings a call at
    width 10, 32,768 at width 140 (an uncut 14-sample Gibbs model). ``budget``
    None: :data:`WORKING_SET_BYTES`, read at the call (so setting it takes effect).
    """
    budget = WORKING_SET_BYTES if budget is None else budget
    per_rating = 4 * (_PER_RATING_ROWS * max(int(width), 1) + _PER_RATING_SCALARS)
    return _floor_pow2(budget // per_rating)


def users_per_batch(n_items: int, width: int, *, budget: int | None = None) -> int:
    """Users whose top-N lists one call computes within ``budget`` bytes.

    Each user costs a row of scores against all ``n_items`` items (and its
    masks) plus its factor row. A power of two, at least 1: one user's row is
    ``n_items`` numbers, fewer than the item factors the model holds anyway.
    ``budget`` None: :data:`WORKING_SET_BYTES`.
    """
    budget = WORKING_SET_BYTES if budget is None else budget
    per_user = _PER_CELL * max(int(n_items), 1) + 4 * max(int(width), 1)
    return _floor_pow2(budget // per_user)


def spans(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of ``size`` covering ``range(n)``."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, n, size):
        yield start, min(start + size, n)


class OutOfMemoryError(RuntimeError):
    """A step of the train stage ran out of (device or host) memory.

    Retrying on the same worker fails the same way; the message says which
    step ran out, how much it asked for when known, and what to change.

    Attributes:
        step: what was running, e.g. ``"fitting the model"``.
        requested: bytes of the allocation that failed, or None if unknown.
    """

    def __init__(self, message: str, *, step: str, requested: int | None = None) -> None:
        super().__init__(message)
        self.step, self.requested = step, requested


_ALLOCATING = re.compile(r"allocating (\d+) bytes")
_ADVICE = ("lower the rank (a Gibbs model publishes up to rank x kept samples columns), "
           "lower factorflow.engine.memory.WORKING_SET_BYTES (scoring's working set, "
           f"{WORKING_SET_BYTES >> 20} MiB) or the chunk_size/batch_size of the scoring calls, "
           "or run the train task on a worker with more memory (GPU memory on a GPU worker)")


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def out_of_memory(step: str, exc: BaseException) -> OutOfMemoryError | None:
    """The :class:`OutOfMemoryError` that ``exc`` means, or None if it is another error.

    Args:
        step: what was running, for the message.
        exc: a caught exception: JAX's ``JaxRuntimeError`` whose message holds
            ``RESOURCE_EXHAUSTED``, or a ``MemoryError``, are out-of-memory errors.
    """
    text = str(exc)
    # Without jax imported no JaxRuntimeError can have been raised: no import here.
    jax_errors = sys.modules.get("jax.errors")
    exhausted = (jax_errors is not None and isinstance(exc, jax_errors.JaxRuntimeError)
                 and "RESOURCE_EXHAUSTED" in text)
    if not (exhausted or isinstance(exc, MemoryError)):
        return None
    found = _ALLOCATING.search(text)
    requested = int(found.group(1)) if found else None
    asked = f" (an allocation of {_size(requested)})" if requested is not None else ""
    detail = text.strip().splitlines()[0].rstrip(".") if text.strip() else type(exc).__name__
    return OutOfMemoryError(f"out of memory while {step}{asked}: {detail}. To fix: {_ADVICE}",
                            step=step, requested=requested)


@contextlib.contextmanager
def memory_guard(step: str) -> Iterator[None]:
    """Run the block; re-raise an out-of-memory error in it as :class:`OutOfMemoryError`."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:  # JaxRuntimeError is a RuntimeError
        if isinstance(exc, OutOfMemoryError):
            raise
        error = out_of_memory(step, exc)
        if error is None:
            raise
        raise error from exc
