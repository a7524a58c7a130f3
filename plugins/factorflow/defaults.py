"""Engine defaults, importable without JAX (the DAG's trigger form shows them)."""

# The shipped method is Bayesian factorization by Gibbs sampling (rank 10, 60
# sweeps): its priors are sampled, so it needs no learning rate or reg tuned to
# the data, and it is the most accurate engine here on data it has not seen
# (MovieLens folds, ml-latest-small; see the README's bench table).
# learning_rate and reg are the gradient optimizers' defaults.
TRAIN_DEFAULTS = {"rank": 10, "epochs": 60, "learning_rate": 0.05, "reg": 0.05,
                  "loss": "squared", "optimizer": "gibbs"}
