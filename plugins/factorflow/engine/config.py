"""The fit's settings (``TrainConfig``) and their range checks, importable without JAX."""

from __future__ import annotations

from typing import NamedTuple

from factorflow.choices import OPTIMIZER_NAMES, SCHEDULE_NAMES, TRAIN_DEFAULTS


class TrainConfig(NamedTuple):
    """Training settings (all JSON-safe) of :func:`factorflow.engine.dispatch.fit`.

    Attributes:
        rank: number of latent factors.
        epochs: maximum number of epochs (Gibbs: sweeps).
        learning_rate: step size (the schedule's starting value). Plain
            ``"gd"`` is badly conditioned here (the mean's gradient is O(1), a
            factor row's shrinks with its share of the ratings); Adam's
            per-coordinate scaling removes the mismatch.
        reg: penalty strength, see :func:`factorflow.engine.gradient.objective.sparse_objective`.
        seed: seed of the run's key (initial factors, sgd shuffles, restarts, the chain).
        optimizer: one of ``choices.OPTIMIZER_NAMES``: ``"gibbs"`` (Bayesian
            factorization by Gibbs sampling, :mod:`factorflow.engine.gibbs`) or a
            gradient optimizer: ``"adam"``, ``"adagrad"``, ``"gd"``,
            ``"normalized_gd"`` (each array moves by ``lr * g / |g|``) or
            ``"sgd"`` (shuffled minibatches).
        init_scale: ``scale`` of :func:`factorflow.engine.factors.init_params`.
        steps_per_epoch: full-batch steps per epoch (one compiled call); must
            be 1 for ``"sgd"``, whose epoch is one pass over the ratings.
        loss: data loss: a ``choices.LOSS_NAMES`` name (``"squared"``,
            ``"huber"``, ``"absolute"``) or ``"package.module:function"``, see
            :func:`factorflow.engine.losses.resolve_loss`.
        penalty: ``"l2"`` (ridge) or ``"l1"`` (sparse coding).
        biases: learn the global mean and user/item biases; False predicts
            ``<p_u, q_i>`` only and leaves them at 0.
        nonneg: project both factor matrices onto ``>= 0`` after every update
            (NMF-style factors).
        representation: ``"auto"``, ``"sparse"`` (COO gathers) or ``"dense"``
            (masked matrix), see :func:`factorflow.engine.gradient.layouts.choose_representation`.
        batch_size: ratings per minibatch for ``"sgd"``.
        schedule: ``"constant"``, ``"cosine"`` or ``"exponential"``; steps per update.
        lr_decay: with a decaying schedule, the last update's rate as a
            fraction of ``learning_rate``, in (0, 1].
        restarts: random restarts trained side by side (vmapped); the one with
            the best validation RMSE (else training loss) is kept.
        patience: with a validation set, stop after this many epochs without a
            new best validation RMSE; None trains all epochs. Gradient
            optimizers keep the best epoch; Gibbs stops when its averaged
            model's RMSE has not improved for ``patience`` post-burn-in sweeps
            and publishes the average so far.
        init_from: warm start: the path of a previous model (a ``.npz`` of
            :meth:`~factorflow.engine.model.FactorModel.save`, or a model
            directory of ``factorflow fit --out`` with its id maps), or None.
            A request only: the caller that holds the id maps resolves it
            (:mod:`factorflow.engine.warm`) and passes the result as
            ``dispatch.fit(init=...)``; the engine itself works on indices.
            A warm Gibbs fit runs :func:`factorflow.engine.warm.warm_epochs`
            of ``epochs`` sweeps (8 of 60).
    """

    rank: int = TRAIN_DEFAULTS["rank"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    learning_rate: float = TRAIN_DEFAULTS["learning_rate"]
    reg: float = TRAIN_DEFAULTS["reg"]
    seed: int = 0
    optimizer: str = TRAIN_DEFAULTS.get("optimizer", "adam")
    init_scale: float = 0.1
    steps_per_epoch: int = 1
    loss: str = TRAIN_DEFAULTS.get("loss", "squared")
    penalty: str = "l2"
    biases: bool = True
    nonneg: bool = False
    representation: str = "auto"
    batch_size: int = 1024
    schedule: str = "constant"
    lr_decay: float = 0.01
    restarts: int = 1
    patience: int | None = None
    init_from: str | None = None


def check_config(config: TrainConfig, patience: int | None) -> None:
    """Raise ``ValueError`` naming the first setting out of range (``patience`` the resolved one).

    Every optimizer's settings are checked, whichever engine runs: a bad value
    is refused even where that engine would ignore it.
    """
    for field in ("rank", "epochs", "steps_per_epoch", "batch_size", "restarts"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
    if config.reg < 0:
        raise ValueError(f"reg must be >= 0, got {config.reg}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    if config.optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {list(OPTIMIZER_NAMES)}")
    check_schedule(config.schedule, config.lr_decay)
    if config.init_from is not None and not isinstance(config.init_from, str):
        raise ValueError(f"init_from must be a path (str) or None, got "
                         f"{type(config.init_from).__name__}: keep TrainConfig JSON-safe")


def check_schedule(name: str, final_fraction: float) -> None:
    """Raise ``ValueError`` for an unknown schedule or ``final_fraction`` outside (0, 1]."""
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"unknown schedule {name!r}; known: {list(SCHEDULE_NAMES)}")
    if not 0.0 < final_fraction <= 1.0:
        raise ValueError(f"final_fraction (lr_decay) must be in (0, 1], got {final_fraction}")
