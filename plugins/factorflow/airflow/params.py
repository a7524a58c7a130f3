"""The trigger form's Params, shared by the factorflow DAGs.

Each Param has a type, a description and bounds, a pattern or an enum, so the
Airflow UI renders helpful fields and rejects a bad conf before any task runs,
naming the field. Names (losses, optimizers) come from the engine's registry.
"""

from __future__ import annotations

from airflow.sdk import Param

from factorflow.defaults import TRAIN_DEFAULTS
from factorflow.identifiers import IDENTIFIER_PATTERN as IDENTIFIER
from factorflow.identifiers import TABLE_PATTERN as TABLE
from factorflow.paths import default_warehouse
from factorflow.registry import LOSS_NAMES, OPTIMIZER_NAMES

# A built-in loss name, or a user-defined one as ``package.module:function``.
LOSS = r"^(%s|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*)$" % "|".join(LOSS_NAMES)
# Airflow connection ids: letters, digits, ``_ . -`` (empty: the DuckDB file).
CONN_ID = r"^[A-Za-z0-9_.-]{0,250}$"
# A warehouse table, or a Parquet/CSV file (or glob) read by DuckDB.
SOURCE = r"(%s)|(^[^;'\"]+\.(parquet|csv|tsv|txt)(\.gz|\.zst)?$)" % TABLE
#: The train Params, by the TrainConfig field each sets.
TRAIN_PARAMS = ("rank", "epochs", "learning_rate", "reg", "seed", "loss", "optimizer",
                "restarts", "patience")


def data_params() -> dict[str, Param]:
    """Where the ratings come from and where models go, validation and publishing."""
    return {
        "warehouse_conn_id": Param("", type="string", pattern=CONN_ID,
                                   description="Airflow connection of the warehouse (type postgres "
                                               "or duckdb). Empty: the DuckDB file below."),
        "source_conn_id": Param("", type="string", pattern=CONN_ID,
                                description="Airflow connection holding the source table when it "
                                            "is not the warehouse (postgres or duckdb); empty: "
                                            "read from the warehouse."),
        "warehouse": Param(default_warehouse(), type="string", minLength=1,
                           description="DuckDB warehouse file, used when no connection is given; "
                                       "models are published into the same warehouse."),
        "source_table": Param("raw.ratings", type="string", pattern=SOURCE,
                              description="schema.table with user_id, item_id, rating (rated_at "
                                          "optional), or a .parquet/.csv path DuckDB reads."),
        "schema": Param("factorflow", type="string", pattern=IDENTIFIER,
                        description="Schema the model tables are published to."),
        "rating_min": Param(1.0, type="number", minimum=-1e6, maximum=1e6,
                            description="Lowest valid rating on the source's scale."),
        "rating_max": Param(5.0, type="number", minimum=-1e6, maximum=1e6,
                            description="Highest valid rating on the source's scale."),
        "min_rows": Param(100, type="integer", minimum=1, maximum=10**12,
                          description="Fewest ratings accepted by validation."),
        "valid_fraction": Param(0.1, type="number", minimum=0, maximum=0.5,
                                description="Share of each user's ratings held out for validation."),
        "seed": Param(0, type="integer", minimum=0, maximum=2**31 - 1,
                      description="Seed of the split and the initialization."),
        "top_n": Param(10, type="integer", minimum=1, maximum=1000,
                       description="Recommendations published per user."),
        "keep": Param(5, type="integer", minimum=1, maximum=1000,
                      description="Published models kept; older ones are deleted when a "
                                  "new one is published."),
    }


def train_params() -> dict[str, Param]:
    """The engine's settings (seed is in :func:`data_params`: it also seeds the split)."""
    return {
        "rank": Param(TRAIN_DEFAULTS["rank"], type="integer", minimum=1, maximum=1024,
                      description="Number of latent factors."),
        "epochs": Param(TRAIN_DEFAULTS["epochs"], type="integer", minimum=1, maximum=100_000,
                        description="Full passes over the training ratings."),
        "learning_rate": Param(TRAIN_DEFAULTS["learning_rate"], type="number",
                               exclusiveMinimum=0, maximum=10, description="Optimizer step size."),
        "reg": Param(TRAIN_DEFAULTS["reg"], type="number", minimum=0, maximum=100,
                     description="Regularization strength (gradient optimizers)."),
        "loss": Param(TRAIN_DEFAULTS["loss"], type="string", pattern=LOSS,
                      examples=list(LOSS_NAMES),
                      description="Data loss: a built-in name, or package.module:function "
                                  "for your own (JAX derives its gradient)."),
        "optimizer": Param(TRAIN_DEFAULTS["optimizer"], type="string",
                           enum=list(OPTIMIZER_NAMES), description="How the loss is minimized."),
        "restarts": Param(1, type="integer", minimum=1, maximum=64,
                          description="Random restarts trained together; the best by "
                                      "validation loss is kept."),
        "patience": Param(None, type=["null", "integer"], minimum=1, maximum=10_000,
                          description="Stop after this many epochs without a better "
                                      "validation RMSE (empty: never stop early)."),
    }
