"""Names of the engine's built-in choices, importable without JAX.

The DAG's trigger form lists these, and parsing the DAG must not import JAX,
so the names live here as plain tuples. The modules that implement them
(:mod:`factorflow.losses`, :mod:`factorflow.optimizers`) assert at import time
that their registries hold exactly these names.
"""

#: Data losses of :data:`factorflow.losses.LOSSES` (``TrainConfig.loss``).
LOSS_NAMES = ("squared", "huber", "absolute")

#: Penalties of :data:`factorflow.losses.REGULARIZERS` (``TrainConfig.penalty``).
PENALTY_NAMES = ("l2", "l1")

#: Gradient optimizers of :data:`factorflow.optimizers.OPTIMIZERS`.
GRADIENT_OPTIMIZER_NAMES = ("adam", "adagrad", "gd", "normalized_gd", "sgd")

#: Samplers: ``"gibbs"`` is Bayesian factorization by Gibbs sampling
#: (:mod:`factorflow.bayes`), the per-row conditionals built from the loss's
#: autodiff derivatives; the model averages the kept samples.
SAMPLER_NAMES = ("gibbs",)

#: Every ``TrainConfig.optimizer`` (the trigger form's choices).
OPTIMIZER_NAMES = SAMPLER_NAMES + GRADIENT_OPTIMIZER_NAMES

#: Learning-rate schedules (``TrainConfig.schedule``).
SCHEDULE_NAMES = ("constant", "cosine", "exponential")

#: Data layouts (``TrainConfig.representation``).
REPRESENTATION_NAMES = ("auto", "sparse", "dense")
