"""The Airflow Assets that publishing updates (one per published table/view).

Defined once here so the producing DAG (outlets) and consumers (schedules)
name the same assets. The warehouse and schema of a run travel in the asset
event's ``extra``, since both are run parameters.
"""

from airflow.sdk import Asset

#: Updated by every successful publish of ``factorize_ratings``.
CURRENT_PREDICTIONS = Asset(name="factorflow.current_predictions",
                            uri="x-factorflow://warehouse/current_predictions")
CURRENT_FACTORS = Asset(name="factorflow.current_factors",
                        uri="x-factorflow://warehouse/current_factors")
MODEL_RUNS = Asset(name="factorflow.model_runs", uri="x-factorflow://warehouse/model_runs")

PUBLISHED = [CURRENT_PREDICTIONS, CURRENT_FACTORS, MODEL_RUNS]
