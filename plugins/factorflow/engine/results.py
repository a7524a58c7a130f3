"""What a fit returns, and the error it raises when training diverges: shared by both engines."""

from __future__ import annotations

from typing import NamedTuple

from factorflow.engine.factors import FactorParams


class TrainingDivergedError(ValueError):
    """The training loss or the parameters stopped being finite."""


class FitResult(NamedTuple):
    """What :func:`factorflow.engine.dispatch.fit` returns, from either engine.

    Attributes:
        params: the published parameters. Gradient optimizers: the best
            epoch's (lowest validation RMSE) with a validation set, else the
            last epoch's; with restarts, of the best restart (no restart axis).
            Gibbs: the model averaged over the kept samples.
        history: one dict per epoch (Gibbs: per sweep) run: ``epoch``
            (1-based), ``seconds`` (since fit started), ``train_loss``,
            ``train_rmse``, ``valid_rmse`` (None without a validation set) and
            ``ratings_per_s`` (epoch 1's includes compiling); each engine adds
            its own keys (see its fit function).
        best_epoch: 1-based epoch whose parameters are in ``params`` (Gibbs:
            the last sweep run).
        seconds: total wall time of the fit.
        warm_start: the source of the warm start it began from
            (:attr:`factorflow.engine.warm.WarmStart.source`), None for a cold start.
    """

    params: FactorParams
    history: list[dict]
    best_epoch: int
    seconds: float
    warm_start: str | None = None
