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

#: Optimizers of :data:`factorflow.optimizers.OPTIMIZERS` (``TrainConfig.optimizer``).
OPTIMIZER_NAMES = ("adam", "adagrad", "gd", "normalized_gd", "sgd")

#: Learning-rate schedules (``TrainConfig.schedule``).
SCHEDULE_NAMES = ("constant", "cosine", "exponential")

#: Data layouts (``TrainConfig.representation``).
REPRESENTATION_NAMES = ("auto", "sparse", "dense")
