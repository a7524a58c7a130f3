"""Names and defaults of the engine's choices, importable without JAX.

The DAG's trigger form lists these names and shows these defaults, and
parsing a DAG file must not import JAX, so they live here as plain tuples
and dicts; the engine modules that implement them assert at import time
that their registries hold exactly these names.
"""

#: Data losses of :data:`factorflow.engine.losses.LOSSES` (``TrainConfig.loss``).
LOSS_NAMES = ("squared", "huber", "absolute")

#: Penalties of :data:`factorflow.engine.losses.REGULARIZERS` (``TrainConfig.penalty``).
PENALTY_NAMES = ("l2", "l1")

#: Gradient optimizers of :data:`factorflow.engine.gradient.optimizers.OPTIMIZERS`.
GRADIENT_OPTIMIZER_NAMES = ("adam", "adagrad", "gd", "normalized_gd", "sgd")

#: Samplers: ``"gibbs"`` is Bayesian factorization by Gibbs sampling
#: (:mod:`factorflow.engine.gibbs.sampler`), the per-row conditionals built from the loss's
#: autodiff derivatives; the model averages the kept samples.
SAMPLER_NAMES = ("gibbs",)

#: Every ``TrainConfig.optimizer`` (the trigger form's choices).
OPTIMIZER_NAMES = SAMPLER_NAMES + GRADIENT_OPTIMIZER_NAMES

#: Learning-rate schedules (``TrainConfig.schedule``).
SCHEDULE_NAMES = ("constant", "cosine", "exponential")

#: Data layouts (``TrainConfig.representation``).
REPRESENTATION_NAMES = ("auto", "sparse", "dense")

# The shipped method is Bayesian factorization by Gibbs sampling (rank 10, 60
# sweeps): its priors are sampled, so it needs no learning rate or reg tuned to
# the data, and it is the most accurate engine here on data it has not seen
# (MovieLens folds, ml-latest-small; see the README's bench table).
# learning_rate and reg are the gradient optimizers' defaults.
TRAIN_DEFAULTS = {"rank": 10, "epochs": 60, "learning_rate": 0.05, "reg": 0.05,
                  "loss": "squared", "optimizer": "gibbs"}
