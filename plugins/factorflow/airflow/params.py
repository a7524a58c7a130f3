"""The trigger form's Params, shared by the factorflow DAGs.

Airflow's trigger form (the React UI) renders these: it marks a field required,
and disables Trigger while it is empty, unless its type list includes
``"null"``; it clamps numbers to minimum/maximum when a field loses focus
without saying so; it groups fields by their ``section``. So optional fields are
typed ``["null", ...]`` with a ``None`` default, every bounded field states its
bounds in its description (added here from the schema, so the two never
disagree), and fields are grouped: data, model, gradient optimizers only,
publishing. A conf outside a schema is refused before a run is created (the
REST API answers 400 naming the field). Names (losses, optimizers) come from
the engine's registry.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from factorflow.airflow.confinement import loss_choices, loss_modules, loss_pattern
from factorflow.choices import TRAIN_DEFAULTS
from factorflow.warehouse.identifiers import IDENTIFIER_PATTERN as IDENTIFIER
from factorflow.warehouse.identifiers import TABLE_PATTERN as TABLE
from factorflow.paths import default_warehouse
from factorflow.choices import LOSS_NAMES, OPTIMIZER_NAMES

#: The form's sections, in the order a person fills them in.
DATA, SWEEP, MODEL, GRADIENT, PUBLISHING = (
    "Data", "Sweep", "Model", "Gradient optimizers only", "Publishing")

# Airflow connection ids: letters, digits, ``_ . -`` (empty: the DuckDB file).
CONN_ID = r"^[A-Za-z0-9_.-]{0,250}$"
# A warehouse table, or a Parquet/CSV file (or glob) read by DuckDB.
SOURCE = r"(%s)|(^[^;'\"]+\.(parquet|csv|tsv|txt)(\.gz|\.zst)?$)" % TABLE
#: The train Params, by the TrainConfig field each sets.
TRAIN_PARAMS = ("rank", "epochs", "learning_rate", "reg", "seed", "loss", "optimizer",
                "restarts", "patience")


def _number(value: float) -> str:
    """A bound as a person reads it: ``1,024``, ``0.5``, ``1e+06``."""
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def bounds_text(schema: dict[str, Any]) -> str:
    """What the form's silent clamping hides: ``"Between 1 and 1024."`` (or one side)."""
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if low is None or high is None:
        return ""
    if "exclusiveMinimum" in schema:
        return f"Above {_number(low)}, at most {_number(high)}."
    return f"Between {_number(low)} and {_number(high)}."


def field(default: Any, *, type: str | list[str], section: str, description: str,
          **schema: Any) -> Param:
    """A Param in a form section, its bounds appended to its description."""
    bounds = bounds_text(schema)
    text = f"{description} {bounds}" if bounds else description
    return Param(default, type=type, section=section, description=text, **schema)


def optional_connection(description: str) -> Param:
    """An Airflow connection id that may stay empty (``None``: not required in the form)."""
    return field(None, type=["null", "string"], pattern=CONN_ID, section=DATA,
                 description=description)


def warehouse_file(when: str) -> Param:
    """The DuckDB warehouse path (default ``$FACTORFLOW_WAREHOUSE``), confined to the data roots."""
    return field(default_warehouse(), type="string", minLength=1, section=DATA,
                 description=f"DuckDB warehouse file, {when}. Must lie under a folder of "
                             "FACTORFLOW_DATA_ROOTS.")


def data_params() -> dict[str, Param]:
    """Where the ratings come from and how they are checked and split."""
    return {
        "warehouse_conn_id": optional_connection(
            "Optional. Airflow connection of the warehouse (type postgres or duckdb). "
            "Empty: the DuckDB file in 'warehouse'."),
        "source_conn_id": optional_connection(
            "Optional. Airflow connection holding the source table when it is not the "
            "warehouse (postgres or duckdb). Empty: read from the warehouse."),
        "warehouse": warehouse_file("used when no warehouse connection is given; models "
                                    "are published into the same warehouse"),
        "source_table": field("raw.ratings", type="string", pattern=SOURCE, section=DATA,
                              description="schema.table with user_id, item_id, rating "
                                          "(rated_at optional), or a .parquet/.csv path or "
                                          "glob under FACTORFLOW_DATA_ROOTS."),
        "rating_min": field(1.0, type="number", minimum=-1e6, maximum=1e6, section=DATA,
                            description="Lowest valid rating on the source's scale."),
        "rating_max": field(5.0, type="number", minimum=-1e6, maximum=1e6, section=DATA,
                            description="Highest valid rating on the source's scale."),
        "min_rows": field(100, type="integer", minimum=1, maximum=10**12, section=DATA,
                          description="Fewest ratings validation accepts."),
        "valid_fraction": field(0.1, type="number", minimum=0, maximum=0.5, section=DATA,
                                description="Share of each user's ratings held out to "
                                            "measure validation RMSE."),
        "seed": field(0, type="integer", minimum=0, maximum=2**31 - 1, section=DATA,
                      description="Seed of the split and of the model's initialization."),
    }


def publish_params() -> dict[str, Param]:
    """Where and how the model is published."""
    return {
        "schema": field("factorflow", type="string", pattern=IDENTIFIER, section=PUBLISHING,
                        description="Schema the model tables are published to: letters, "
                                    "digits and underscores, not starting with a digit."),
        "top_n": field(10, type="integer", minimum=1, maximum=1000, section=PUBLISHING,
                       description="Recommendations published per user."),
        "keep": field(5, type="integer", minimum=1, maximum=1000, section=PUBLISHING,
                      description="Published models kept; older ones are deleted when a "
                                  "new one is published."),
    }


def train_params() -> dict[str, Param]:
    """The engine's settings (seed is with the data: it also seeds the split)."""
    return {
        "optimizer": field(TRAIN_DEFAULTS["optimizer"], type="string",
                           enum=list(OPTIMIZER_NAMES), section=MODEL,
                           description="How the loss is minimized. gibbs (default): Bayesian "
                                       "factorization by Gibbs sampling, no learning rate or "
                                       "reg to tune; the others are gradient optimizers."),
        "rank": field(TRAIN_DEFAULTS["rank"], type="integer", minimum=1, maximum=1024,
                      section=MODEL, description="Number of latent factors."),
        "epochs": field(TRAIN_DEFAULTS["epochs"], type="integer", minimum=1, maximum=100_000,
                        section=MODEL,
                        description="gibbs: sweeps of the sampler; gradient optimizers: full "
                                    "passes over the training ratings."),
        # A built-in name, or module:function from FACTORFLOW_LOSS_MODULES as set where
        # the DAG is parsed (the train task checks again with its worker's setting).
        "loss": field(TRAIN_DEFAULTS["loss"], type="string",
                      pattern=loss_pattern(loss_modules()), examples=list(LOSS_NAMES),
                      section=MODEL,
                      description="Data loss: %s (JAX derives its gradient)."
                                  % loss_choices(loss_modules())),
        "patience": field(None, type=["null", "integer"], minimum=1, maximum=10_000,
                          section=MODEL,
                          description="Optional. Stop after this many epochs without a better "
                                      "validation RMSE; empty: never stop early. Gradient "
                                      "optimizers keep their best epoch; gibbs stops when its "
                                      "averaged model stops improving and keeps the average."),
        "learning_rate": field(TRAIN_DEFAULTS["learning_rate"], type="number",
                               exclusiveMinimum=0, maximum=10, section=GRADIENT,
                               description="Step size of the gradient optimizers; gibbs "
                                           "ignores it."),
        "reg": field(TRAIN_DEFAULTS["reg"], type="number", minimum=0, maximum=100,
                     section=GRADIENT,
                     description="L2 regularization strength of the gradient optimizers; "
                                 "gibbs samples its priors and ignores it."),
        "restarts": field(1, type="integer", minimum=1, maximum=64, section=GRADIENT,
                          description="Random restarts trained together by the gradient "
                                      "optimizers; the best by validation loss is kept. "
                                      "gibbs runs one chain and refuses more."),
    }


def warm_start_params() -> dict[str, Param]:
    """Whether a run builds on the current published model (factorize_ratings)."""
    return {
        "warm_start": field(True, type="boolean", section=MODEL,
                            description="Start from the current published model of the same "
                                        "schema: known users and items keep their factors, new "
                                        "ones start as in a cold start, and gibbs runs a "
                                        "quarter of its sweeps. A model of another rank or "
                                        "loss, or none at all, gives a cold start (the train "
                                        "log says why)."),
    }


def sweep_params() -> dict[str, Param]:
    """tune_factorization's search space: which candidates are trained."""
    return {
        "space": field({"rank": [8, 16], "optimizer": ["gibbs", "adam"]}, type="object",
                       minProperties=1, maxProperties=16,
                       additionalProperties={"type": "array", "minItems": 1, "maxItems": 64},
                       section=SWEEP,
                       description="Search space: a setting (rank, reg, learning_rate, "
                                   "optimizer, loss, epochs, ...) -> list of values; the other "
                                   "settings come from the fields below. At most 64 "
                                   "candidates."),
        "search": field("grid", type="string", enum=["grid", "random"], section=SWEEP,
                        description="grid: every combination; random: 'samples' of them."),
        "samples": field(None, type=["null", "integer"], minimum=1, maximum=64, section=SWEEP,
                         description="Optional. Candidates drawn by a random search (seeded "
                                     "by 'seed'); empty: all of them."),
    }


def downstream_params() -> dict[str, Param]:
    """recommendations_daily's manual-run fields (an asset event names its own warehouse)."""
    return {
        "warehouse_conn_id": optional_connection(
            "Optional. Airflow connection of the warehouse (postgres or duckdb); empty: the "
            "DuckDB file below. Used when the run was not triggered by a publish."),
        "warehouse": warehouse_file("used when the run was not triggered by a publish"),
        "schema": publish_params()["schema"],
    }
