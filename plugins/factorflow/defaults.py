"""Engine defaults, importable without JAX (the DAG's trigger form shows them)."""

TRAIN_DEFAULTS = {"rank": 32, "epochs": 60, "learning_rate": 0.05, "reg": 0.05,
                  "loss": "squared", "optimizer": "adam"}
