"""One Gibbs chain: its rows, priors and noise set up from the ratings, advanced one sweep at a time.

A sweep resamples, in order: user hyperparameters, all user rows, alpha,
item hyperparameters, all item rows, alpha. The rows of a side are resampled
in one compiled program (:func:`factorflow.engine.gibbs.kernels.half_step`);
the hyperparameters and alpha are drawn in NumPy on the host
(:mod:`factorflow.engine.gibbs.priors`) from the statistics it returns, each
side's row prior while the other side's step runs. Random numbers: the fit's
seeded NumPy generator (standard normals for the rows, exact chi-square and
Gamma variates for the hyperparameters).

A chain starts at the damped-mean baseline (biases) and small random
factors, or, warm-started (:class:`factorflow.engine.warm.WarmStart`), at a
previous model's rows wherever it knew the user or item. Either way the row
priors and the noise precision are not carried over: the first draws follow
from the starting rows' statistics and their residuals, so a warm chain's
hyperparameters are those of the previous model's rows from its first sweep.
"""

from __future__ import annotations

import concurrent.futures

import jax
import numpy as np

from factorflow.engine.factors import FactorParams
from factorflow.engine.gibbs import kernels, layout, priors
from factorflow.engine.gibbs.averaging import KeptSamples, average_samples
from factorflow.engine.metrics import fit_baseline, predict_baseline
from factorflow.engine.results import TrainingDivergedError
from factorflow.engine.triplets import Triplets
from factorflow.engine.warm import WarmStart, blend

#: Ratings a warm chain's first noise estimate looks at (evenly strided).
_NOISE_SAMPLE = 8192
_NO_RATINGS = Triplets(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))


class Chain:
    """A Gibbs chain over ``train``, scored on ``train`` and ``valid`` by its averaged model.

    Attributes:
        x: ``[users [RU, D], items [RI, D]]`` current rows ``[factors, bias]``
            on the device, ``D = rank + 1``, padded to the bucketed sizes.
        alpha: the current noise precision.
        kept: the kept samples and the running sums of their predictions.
    """

    def __init__(self, train: Triplets, valid: Triplets | None, *, n_users: int, n_items: int,
                 config, loss, init: WarmStart | None = None):
        u, i, r = train
        k, d = config.rank, config.rank + 1
        self.config, self.n_users, self.n_items, self.n_ratings = config, n_users, n_items, len(r)
        self.mean = float(np.mean(r, dtype=np.float64))
        self.var = max(float(np.var(r, dtype=np.float64)), 1e-6 * max(self.mean ** 2, 1.0))
        cu, ci = np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)
        self.n_rows = (int(np.count_nonzero(cu)), int(np.count_nonzero(ci)))
        shapes = layout.padded_shapes(cu, ci, config.chunk, d)
        n_obs = layout.bucket(len(r))
        n_valid = layout.bucket(max(0 if valid is None else len(valid), 1))
        # The half-step loads (from disk, GIL released) on another thread while the
        # data is laid out here, then this thread loads the score program: on a
        # 2-core CPU that hides the layout and the smaller load.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            loading, load_score = kernels.load_kernels(pool, shapes, n_obs, n_valid,
                                                        rank=k, loss=loss)
            self.layouts, self.obs, self.has = layout.device_layouts(train, shapes, n_obs,
                                                                     self.mean)
            x, base = self._initial_rows(train, shapes, init)
            # NumPy values and device_put only: an eager JAX operation would compile.
            obs_v = jax.device_put(layout.pad_obs(*(valid or _NO_RATINGS), n_valid, self.mean))
            self.x = jax.device_put(x)
            score = load_score()
            self.steps = loading.result()
        # The first noise estimate: the residual variance of the rows the chain starts at
        # (cold: the baseline's, the random factors' share being negligible; warm: on
        # every s-th rating, ~8k of them: alpha is drawn again after the first half-step).
        every = max(1, len(r) // _NOISE_SAMPLE)
        resid = (r - predict_baseline(base, u, i) if init is None else
                 r[::every] - _predict_rows(x, u[::every], i[::every], rank=k, mean=self.mean))
        self.alpha = 1.0 / max(float(np.var(resid, dtype=np.float64)), 1e-6 * self.var)
        self.mean32 = np.float32(self.mean)
        bounds = np.array([r.min(), r.max()] if config.clip else [-np.inf, np.inf], np.float32)
        self.kept = KeptSamples(
            lambda rows, keep, sums: score(*rows, sums, np.float32(keep), self.has, self.obs[0],
                                           obs_v, self.mean32, bounds),
            (np.zeros(n_obs, np.float32), np.zeros(n_valid, np.float32), np.float32(0)),
            config.max_samples)
        self.ahead = self.draws(0)

    def _initial_rows(self, train: Triplets, shapes, init: WarmStart | None):
        """Rows ``[RU, D]``, ``[RI, D]`` to start from, and the damped-mean baseline.

        Factors ``N(0, s0²)``, ``s0 = latent_scale * (var / rank) ** 0.25``;
        biases start at the baseline, so the first sweeps refine a model that
        already has them instead of finding them. ``init``'s known rows then
        replace theirs (:func:`factorflow.engine.warm.blend`; the chain's
        ``mean`` stays the training mean, the first half-step absorbs the
        small shift from the previous one).
        """
        c, k, d = self.config, self.config.rank, self.config.rank + 1
        s0 = c.latent_scale * (self.var / k) ** 0.25
        self.nu0 = d + c.prior_dof
        self.w0_inv = np.eye(d) * (self.nu0 * s0 * s0)  # prior row std ~ s0
        self.rng = np.random.default_rng(c.seed)
        x = [np.concatenate([self.rng.normal(0, s0, (n, k)), np.zeros((n, 1))], 1)
             .astype(np.float32) for n in (shapes[0][0], shapes[1][0])]
        base = fit_baseline(train, n_users=self.n_users, n_items=self.n_items, iters=3)
        x[0][:self.n_users, k], x[1][:self.n_items, k] = base.user_bias, base.item_bias
        if init is not None:
            _warm_rows(x, init, self.n_users, self.n_items, k)
        self.row_stats = [priors.row_statistics(x[s], self.has[s]) for s in (0, 1)]
        self.noise_shapes = [a.shape for a in x]
        return x, base

    def draws(self, s: int):
        """Side ``s``'s row prior ``(Lam [D, D], Lam m [D])`` and normals ``[R, D]``.

        They need only that side's row statistics, so they are drawn while the
        other side's step runs.
        """
        m, lam = priors.normal_wishart_posterior(
            self.rng, self.n_rows[s], self.row_stats[s], beta0=self.config.prior_strength,
            nu0=self.nu0, w0_inv=self.w0_inv)
        return (lam.astype(np.float32), (lam @ m).astype(np.float32),
                self.rng.standard_normal(self.noise_shapes[s], np.float32))

    def sweep(self, t: int):
        """Sweep ``t`` (1-based): users, then items; returns both sides' conditional means.

        Sweep 1 keeps the conditional means rather than the draws: the first
        user draws, given random item factors, are mostly prior noise that
        would otherwise pass into the items. From sweep 2 on every step is an
        exact Gibbs step.

        Raises:
            TrainingDivergedError: a side's rows or loss are not finite.
        """
        c, means = self.config, [None, None]
        for s in (0, 1):
            self.x[s], means[s], out = self.steps[s](
                self.x[s], self.x[1 - s], np.float32(self.alpha), *self.ahead, self.layouts[s],
                self.obs[s], self.mean32)
            if t == 1:
                self.x[s] = means[s]
            self.ahead = self.draws(1 - s)  # the next step's, while this one runs
            out = np.asarray(out, np.float64)
            if not np.all(np.isfinite(out)):
                raise TrainingDivergedError(
                    f"Gibbs sampling diverged at sweep {t}/{c.sweeps}: non-finite "
                    f"{('user', 'item')[s]} rows or loss; check the ratings and the loss")
            self.row_stats[s] = out[:-1]
            self.alpha = priors.noise_precision(self.rng, self.n_ratings, out[-1],
                                                shape=c.noise_shape, rate=c.noise_rate * self.var)
        return tuple(means)

    def averaged(self, current, keep_energy: float | None = None):
        """The average of the kept samples (``current`` alone before the first) as one model."""
        samples = self.kept.samples() or [current]
        mask_u, mask_i = (np.asarray(h)[:n] for h, n in zip(self.has, (self.n_users,
                                                                         self.n_items)))
        return average_samples(
            self.mean, np.stack([np.asarray(a)[:self.n_users] for a, _ in samples]),
            np.stack([np.asarray(b)[:self.n_items] for _, b in samples]), mask_u, mask_i,
            keep_energy=keep_energy)


def _warm_rows(x: list[np.ndarray], init: WarmStart, n_users: int, n_items: int,
               rank: int) -> None:
    """Overwrite, in place, the known rows of ``x`` (``[RU, D]``, ``[RI, D]``) with ``init``'s."""
    u, i = x[0][:n_users], x[1][:n_items]
    cold = FactorParams(np.float32(0), u[:, rank], i[:, rank], u[:, :rank], i[:, :rank])
    warm = blend(init, cold)
    u[:, :rank], i[:, :rank] = warm.user_factors, warm.item_factors
    u[:, rank], i[:, rank] = warm.user_bias, warm.item_bias


def _predict_rows(x: list[np.ndarray], u: np.ndarray, i: np.ndarray, *, rank: int,
                  mean: float) -> np.ndarray:
    """``[n]`` float32 predictions of the rows ``x`` for the ``[n]`` ratings ``(u, i)``."""
    users, items = x[0][u], x[1][i]
    return (np.float32(mean) + users[:, rank] + items[:, rank]
            + np.einsum("nk,nk->n", users[:, :rank], items[:, :rank]))
