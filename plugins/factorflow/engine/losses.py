"""Loss functions for latent-factor models.

Data losses are per-element: ``fn(pred, target) -> values`` with all three of
one shape, so the caller chooses how to reduce (a mean over observed ratings, a
masked sum over a dense matrix, a weighted mean over a minibatch). Penalties are
per-element too: ``fn(x) -> values`` of ``x``'s shape; the objective decides
which parameters they charge and how often (see
:func:`factorflow.engine.gradient.objective.sparse_objective`).

A user-defined loss is any JAX-traceable function with the data-loss signature::

    def my_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
        '''pred, target: [n] float32 -> [n] per-element loss, differentiable in pred.'''

named in ``TrainConfig.loss`` as ``"package.module:function"`` and checked once by
:func:`resolve_loss`.
"""

from __future__ import annotations

import importlib
import weakref
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.choices import LOSS_NAMES, PENALTY_NAMES

DataLoss = Callable[[jax.Array, jax.Array], jax.Array]
Penalty = Callable[[jax.Array], jax.Array]


class InvalidLossError(ValueError):
    """A loss spec that cannot be imported, called, or differentiated."""


def _check_same_shape(**arrays: jax.Array) -> None:
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; all must be equal")


def _abs(x: jax.Array) -> jax.Array:
    # |x| as x * sign(x): the same values, but gradient sign(x), which is 0 at
    # 0, where jnp.abs's gradient is 1.
    return x * jnp.sign(x)


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-element squared error ``(pred - target) ** 2``.

    Args:
        pred: predictions, any shape, e.g. ``[n]``.
        target: targets, the same shape as ``pred``.

    Returns:
        Squared errors, the shape of ``pred``.

    Raises:
        ValueError: if ``pred`` and ``target`` differ in shape (broadcasting
            is refused: it silently turns ``[n]`` vs ``[n, 1]`` into ``[n, n]``).
    """
    _check_same_shape(pred=pred, target=target)
    return jnp.square(jnp.asarray(pred) - jnp.asarray(target))


def absolute_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-element absolute error ``|pred - target|`` (gradient 0 at a tie).

    Args:
        pred: predictions, e.g. ``[n]``.
        target: targets, the same shape as ``pred``.

    Returns:
        Absolute errors, the shape of ``pred``.

    Raises:
        ValueError: if the shapes differ.
    """
    _check_same_shape(pred=pred, target=target)
    return _abs(jnp.asarray(pred) - jnp.asarray(target))


def huber(pred: jax.Array, target: jax.Array, *, delta: float = 1.0) -> jax.Array:
    """Per-element Huber loss: quadratic near the target, linear far from it.

    ``0.5 * r**2`` where ``|r| <= delta``, else ``delta * (|r| - 0.5 * delta)``,
    with ``r = pred - target``: the standard form, continuous with a continuous
    gradient, so outlying ratings pull with a bounded force ``delta``.

    Args:
        pred: predictions, e.g. ``[n]``.
        target: targets, the same shape as ``pred``.
        delta: where the loss turns linear, > 0.

    Returns:
        Huber losses, the shape of ``pred``.

    Raises:
        ValueError: if the shapes differ or ``delta <= 0``.
    """
    _check_same_shape(pred=pred, target=target)
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta}")
    abs_r = jnp.abs(jnp.asarray(pred) - jnp.asarray(target))
    quadratic = jnp.minimum(abs_r, delta)
    return 0.5 * quadratic**2 + delta * (abs_r - quadratic)


def masked_squared_error(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-element squared error that is zero where ``mask`` is False.

    Args:
        pred: predictions, e.g. ``[n_users, n_items]``.
        target: ratings, the shape of ``pred``; values where unobserved are ignored.
        mask: boolean, the shape of ``pred``; True where a rating is observed.

    Returns:
        Squared errors, the shape of ``pred``, 0 where ``mask`` is False.

    Raises:
        ValueError: if the three shapes are not all equal.
    """
    _check_same_shape(pred=pred, target=target, mask=mask)
    # where() rather than multiplying by the mask: an unobserved target may hold
    # garbage (inf, nan) and 0 * inf would leak a nan into the sum and gradient.
    return jnp.where(mask, jnp.square(jnp.asarray(pred) - jnp.asarray(target)), 0.0)


def l2_penalty(x: jax.Array) -> jax.Array:
    """Per-element ridge penalty ``x ** 2``, the shape of ``x``."""
    return jnp.square(x)


def l1_penalty(x: jax.Array) -> jax.Array:
    """Per-element lasso penalty ``|x|`` (sparse coding), the shape of ``x``.

    Its gradient is ``sign(x)``, 0 at exactly 0, so a factor pinned at 0 (for
    example by a non-negativity projection) stays there.
    """
    return _abs(x)


#: Per-element data losses by name; each follows :func:`squared_error`'s contract.
LOSSES: dict[str, DataLoss] = {
    "squared": squared_error,
    "huber": huber,
    "absolute": absolute_error,
}

#: Per-element penalties by name (``TrainConfig.penalty``).
REGULARIZERS: dict[str, Penalty] = {"l2": l2_penalty, "l1": l1_penalty}

assert tuple(LOSSES) == LOSS_NAMES, "losses.LOSSES and choices.LOSS_NAMES disagree"
assert tuple(REGULARIZERS) == PENALTY_NAMES, "REGULARIZERS and choices.PENALTY_NAMES disagree"


def _registered(registry: dict, kind: str, name: str):
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}") from None


def get_loss(name: str) -> DataLoss:
    """The data loss registered under ``name`` in :data:`LOSSES`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return _registered(LOSSES, "loss", name)


def get_penalty(name: str) -> Penalty:
    """The penalty registered under ``name`` in :data:`REGULARIZERS`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    return _registered(REGULARIZERS, "penalty", name)


def _import_loss(spec: str) -> object:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidLossError(f"loss {spec!r}: an import path must read 'package.module:function'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidLossError(
            f"loss {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InvalidLossError(f"loss {spec!r}: {obj.__name__!r} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


# Probe residuals of both signs and several sizes, none zero: any sensible
# loss has a non-zero gradient at some of them.
_PROBE_PRED = np.array([3.2, 1.0, 4.5, 2.0, 3.0], np.float32)
_PROBE_TARGET = np.array([1.0, 1.5, 4.0, 4.5, 3.8], np.float32)
_validated: "weakref.WeakSet[object]" = weakref.WeakSet()


def _validate(fn: DataLoss, name: str) -> None:
    """Run ``fn`` once under ``jit`` + ``vjp`` on a ``[5]`` probe (one trace)."""
    try:
        if fn in _validated:
            return
    except TypeError:  # not weak-referenceable: validate every time
        pass

    def probe(pred, target):
        out, vjp = jax.vjp(lambda p: fn(p, target), pred)
        if jnp.shape(out) != jnp.shape(pred):
            raise InvalidLossError(
                f"loss {name}: must return per-element values of pred's shape {jnp.shape(pred)}, "
                f"returned shape {jnp.shape(out)}; do not reduce, the trainer does"
            )
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise InvalidLossError(f"loss {name}: returned dtype {out.dtype}, need a float")
        (grad,) = vjp(jnp.ones_like(out))
        return out, grad

    try:
        out, grad = jax.jit(probe)(_PROBE_PRED, _PROBE_TARGET)
    except InvalidLossError:
        raise
    except Exception as exc:
        raise InvalidLossError(
            f"loss {name}: failed under jax.jit/jax.vjp on a [5] probe ({type(exc).__name__}: "
            f"{exc}); a loss must be a JAX-traceable, differentiable "
            "fn(pred [n], target [n]) -> [n]"
        ) from exc
    out, grad = np.asarray(out), np.asarray(grad)
    if not (np.all(np.isfinite(out)) and np.all(np.isfinite(grad))):
        raise InvalidLossError(
            f"loss {name}: non-finite value or gradient on a probe: {out}, {grad}")
    if not np.any(grad):
        raise InvalidLossError(
            f"loss {name}: its gradient is zero at every probe point (pred != target); "
            "it is not differentiable in pred (rounding, casts, stop_gradient?)"
        )
    try:
        _validated.add(fn)
    except TypeError:
        pass


def resolve_loss(spec: str | DataLoss) -> DataLoss:
    """The per-element data loss for a registry name, an import path or a callable.

    Args:
        spec: a name in :data:`LOSSES` (``"squared"``), an import path
            ``"package.module:function"``, or the function itself. The function
            must be ``fn(pred: [n] float32, target: [n] float32) -> [n]``,
            traceable by ``jax.jit`` and differentiable in ``pred`` by JAX.

    Returns:
        The loss function itself (the same object for the same spec, so the
        compiled training step is reused).

    Raises:
        InvalidLossError: (a ValueError) naming what is wrong: unknown name,
            module not found, attribute missing, not callable, wrong output
            shape or dtype, not traceable, or a gradient that is zero/non-finite.
    """
    if isinstance(spec, str):
        if spec in LOSSES:
            return LOSSES[spec]
        if ":" not in spec:
            raise InvalidLossError(
                f"unknown loss {spec!r}; known: {sorted(LOSSES)}, or an import path "
                "'package.module:function'"
            )
        fn, name = _import_loss(spec), repr(spec)
    elif any(spec is known for known in LOSSES.values()):
        return spec  # built in: validated by the tests, not again per fit
    else:
        fn, name = spec, getattr(spec, "__qualname__", repr(spec))
    if not callable(fn):
        raise InvalidLossError(f"loss {name}: {type(fn).__name__} object is not callable")
    _validate(fn, name)
    return fn
