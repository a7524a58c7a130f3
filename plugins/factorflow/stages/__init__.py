"""The pipeline's five stages, each one plain function: paths and params in, a JSON-safe summary out.

The Airflow operators call these functions and push their summaries to XCom;
nothing here sees an Airflow object, so each stage also runs from a test or a
script. In pipeline order:

- :func:`factorflow.stages.extract.extract_ratings`: a warehouse table (or a
  Parquet/CSV file) in; ``ratings.parquet`` out.
- :func:`factorflow.stages.validate.validate_ratings`: ``ratings.parquet`` and
  the rating scale in; the expectation suite's verdict out (a
  ``RatingsValidationError`` listing each failure when it fails).
- :func:`factorflow.stages.build.build_matrices`: ``ratings.parquet`` in; id
  maps, a seeded train/validation split as COO triplets, and their counts out.
- :func:`factorflow.stages.train.train_factors`: the build's directory and the
  training settings in; the model, its metrics, per-epoch curves and every
  user's top-N list out.
- :func:`factorflow.stages.publish.publish_model`: the train and build
  directories and a warehouse in; the model's tables staged and written in one
  transaction by the warehouse's back end (:func:`factorflow.warehouse.open_warehouse`).

Beside them: :mod:`~factorflow.stages.progress` (progress lines of a long step),
:mod:`~factorflow.stages.resources` (a stage's wall time and peak memory) and
:mod:`~factorflow.stages.curves` (the RMSE-by-epoch history and picture); the
validate stage's helpers live in :mod:`factorflow.stages.validation`. The stages
import the engine and the warehouse; the engine imports no stage.
"""
