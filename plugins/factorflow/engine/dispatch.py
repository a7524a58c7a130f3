"""The one fit entry point: the settings checked once, then Gibbs sampling or a gradient optimizer.

``TrainConfig.optimizer`` picks the engine: ``"gibbs"`` runs
:func:`factorflow.engine.gibbs.sampler.fit_gibbs` (one epoch is one sweep),
any other name :func:`factorflow.engine.gradient.fit.fit_gradient`. Both
return a :class:`factorflow.engine.results.FitResult`, and both start from a
:class:`factorflow.engine.warm.WarmStart` when one is given as ``init``.
"""

from __future__ import annotations

from typing import Callable

import jax

from factorflow.choices import SAMPLER_NAMES
from factorflow.engine.config import TrainConfig, check_config
from factorflow.engine.factors import FactorParams
from factorflow.engine.gibbs.sampler import GibbsConfig, fit_gibbs
from factorflow.engine.gradient.fit import fit_gradient
from factorflow.engine.losses import DataLoss, resolve_loss
from factorflow.engine.results import FitResult
from factorflow.engine.triplets import Triplets
from factorflow.engine.warm import WARM_BURN_IN, WarmStart, check_init, warm_epochs


def fit(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    valid: Triplets | None = None,
    config: TrainConfig = TrainConfig(),
    loss: str | DataLoss | None = None,
    log: Callable[[str], None] | None = None,
    patience: int | None = None,
    key: jax.Array | None = None,
    on_epoch: Callable[[int, FactorParams], None] | None = None,
    init: WarmStart | None = None,
) -> FitResult:
    """Train a biased factor model on COO ratings with the engine ``config.optimizer`` names.

    Args:
        train: training ratings.
        n_users: number of users; every user index must be below it.
        n_items: number of items; every item index must be below it.
        valid: optional held-out ratings, scored (RMSE) after every epoch.
        config: training settings (:class:`factorflow.engine.config.TrainConfig`).
        loss: overrides ``config.loss``: a name, import path or
            ``fn(pred [n], target [n]) -> [n]``.
        log: called once per epoch with a human-readable progress line.
        patience: overrides ``config.patience`` when not None.
        key: the gradient run's PRNG key; default ``jax.random.key(config.seed)``
            (Gibbs ignores it: its chain draws from ``config.seed``).
        on_epoch: called after every epoch with the epoch (1-based) and the
            parameters that epoch published, e.g. to score a test set.
        init: warm start on this fit's indices
            (:func:`factorflow.engine.warm.warm_start`): known rows start at
            the previous model's, new ones as in a cold start; a Gibbs fit
            then runs :func:`~factorflow.engine.warm.warm_epochs` sweeps (8 of
            60) with no burn-in. None is a cold start; ``config.init_from`` is not
            read here (it needs the id maps, which the caller holds).

    Returns:
        A :class:`factorflow.engine.results.FitResult`.

    Raises:
        ValueError: for empty or out-of-range inputs or bad settings
            (:class:`factorflow.engine.losses.InvalidLossError` for a bad loss),
            a gradient-only setting given to Gibbs, or an ``init`` of other shapes.
        factorflow.engine.results.TrainingDivergedError: when the loss or the
            parameters become nan/inf.
    """
    patience = config.patience if patience is None else patience
    check_config(config, patience)
    if init is not None:
        check_init(init, n_users=n_users, n_items=n_items, rank=config.rank)
    if config.optimizer not in SAMPLER_NAMES:
        return fit_gradient(train, n_users=n_users, n_items=n_items, valid=valid, config=config,
                            loss=loss, log=log, patience=patience, key=key, on_epoch=on_epoch,
                            init=init)
    return fit_gibbs(train, n_users=n_users, n_items=n_items, valid=valid,
                     config=gibbs_config(config, patience, warm=init is not None),
                     loss=resolve_loss(config.loss if loss is None else loss), log=log,
                     on_epoch=on_epoch, init=init)


def gibbs_config(config: TrainConfig, patience: int | None, *, warm: bool = False
                 ) -> GibbsConfig:
    """The :class:`GibbsConfig` of ``optimizer="gibbs"``; refuses gradient-only settings.

    Rank, epochs (sweeps), seed and patience carry over; the priors replace
    ``learning_rate`` and ``reg``. A ``warm`` chain runs
    :func:`~factorflow.engine.warm.warm_epochs` of the sweeps after a burn-in
    of :data:`~factorflow.engine.warm.WARM_BURN_IN`.

    Raises:
        ValueError: naming every gradient-only setting that was given.
    """
    unsupported = {"restarts": config.restarts != 1, "nonneg": config.nonneg,
                   "biases=False": not config.biases, "penalty": config.penalty != "l2"}
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(f"optimizer 'gibbs' does not take {', '.join(named)}: "
                         "use a gradient optimizer (e.g. 'adam') for those")
    # clip=False: the history then scores exactly the model that is returned
    # (published factors cannot clip a dot product).
    sweeps = warm_epochs(config.epochs) if warm else config.epochs
    burn_in = WARM_BURN_IN if warm else GibbsConfig().burn_in
    return GibbsConfig(rank=config.rank, sweeps=sweeps, seed=config.seed, clip=False,
                       burn_in=min(burn_in, sweeps - 1), patience=patience)
