"""Great Expectations plumbing: table-level expectations on the file's footer, the rest on frames.

A table-level expectation that needs only the table's row count or columns is
evaluated by GX from those numbers, read from the Parquet footer
(:func:`validate_on_footer`): no frame of the table's size, which GX would
fingerprint at 32 bytes a row. Row-level expectations run on pandas frames of
bounded size (GX 1.x has no Polars source, and its SQL source over
duckdb-engine gives wrong results), made from parts of the table in Arrow
(:func:`frame_of`).

``great_expectations``, pandas and pyarrow are imported inside functions only:
Airflow imports this package while parsing DAG files.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Callable

from factorflow.stages.validation.partitions import ROW

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

#: ``frame -> [(position in the suite, GX's result)]`` for one group of expectations.
GroupRun = Callable[["pd.DataFrame"], list[tuple[int, Any]]]
#: The metrics a Parquet footer answers (see :func:`footer`).
FOOTER_METRICS = frozenset({"table.row_count", "table.columns", "table.column_count"})


def import_gx() -> Any:
    """``great_expectations``, imported without its INFO chatter and analytics."""
    # Before the import: GX logs dozens of INFO lines while importing. Only a
    # logger nobody configured is touched, so an explicit choice still wins.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


class SuiteRunner:
    """Runs groups of a suite's expectations, each on one pandas frame at a time.

    Args:
        gx: the ``great_expectations`` module (:func:`import_gx`).
        doc: the suite's JSON (GX's ExpectationSuite fields).
        params: the values of the suite's ``{"$PARAMETER": name}`` placeholders.
        result_format: GX's result format for every run.
    """

    def __init__(self, gx: Any, doc: dict[str, Any], params: dict[str, Any],
                 result_format: dict[str, Any]) -> None:
        self.gx, self.doc, self.params, self.result_format = gx, doc, params, result_format
        self.context = _ephemeral_context(gx)

    def group(self, name: str, positions: list[int]) -> GroupRun:
        """A run of the suite's expectations at ``positions`` (0-based) on a frame."""
        gx, context = self.gx, self.context
        suite = context.suites.add(gx.ExpectationSuite(
            name=f"{self.doc.get('name', 'suite')}.{name}",
            expectations=[self.doc["expectations"][i] for i in positions]))
        # GX does not keep suite order in its results; the ids lead back to it.
        position = {e.id: i for e, i in zip(suite.expectations, positions)}
        data = (context.data_sources.add_pandas(name).add_dataframe_asset(name)
                .add_batch_definition_whole_dataframe(name))
        # A ValidationDefinition fetches the batch once (Batch.validate twice,
        # hashing the frame each time).
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=data, suite=suite))

        def run(frame: pd.DataFrame) -> list[tuple[int, Any]]:
            out = definition.run(batch_parameters={"dataframe": frame},
                                 expectation_parameters=self.params,
                                 result_format=self.result_format)
            return [(position[r.expectation_config.id], r) for r in out.results]

        return run


def frame_of(table: pa.Table) -> pd.DataFrame:
    """A pandas batch of an Arrow table, indexed by its :data:`ROW` column where it has one.

    Dtypes are those of ``pd.read_parquet(dtype_backend="numpy_nullable")``,
    except floats (float64, NaN for null) and integers without nulls (NumPy):
    GX checks ranges of those vectorised, and the rest with a Python call a
    value. Null and NaN stay null to pandas either way, as does every result.
    """
    import pandas as pd

    names = [n for n in table.column_names if n != ROW]
    index = pd.Index(table.column(ROW).to_numpy()) if ROW in table.column_names else None
    return pd.DataFrame({n: _values(table.column(n)) for n in names}, index=index)


def footer(n_rows: int, columns: list[str]) -> dict[str, Any]:
    """The :data:`FOOTER_METRICS` of a table, as GX's pandas engine would compute them."""
    return {"table.row_count": n_rows, "table.columns": list(columns),
            "table.column_count": len(columns)}


def metric_names(expectation: Any, result_format: dict[str, Any]) -> set[str]:
    """The names of the metrics GX computes to evaluate ``expectation``."""
    deps = expectation.get_validation_dependencies(
        runtime_configuration={"result_format": result_format})
    return set(deps.metric_configurations)


def validate_on_footer(expectation: Any, params: dict[str, Any], metrics: dict[str, Any],
                       result_format: dict[str, Any]) -> Any:
    """GX's result for ``expectation`` given the values of its metrics (:func:`footer`).

    Args:
        expectation: a GX expectation of the suite, parameters unresolved.
        params: the suite parameters' values.
        metrics: values by metric name; must hold every metric it depends on.
        result_format: GX's result format.
    """
    config = expectation.configuration  # a copy: resolving parameters leaves the suite as is
    config.process_suite_parameters(suite_parameters=params, interactive_evaluation=True)
    resolved = config.to_domain_obj()
    runtime = {"result_format": result_format}
    deps = resolved.get_validation_dependencies(runtime_configuration=dict(runtime))
    values = {cfg.id: metrics[name] for name, cfg in deps.metric_configurations.items()}
    return resolved.metrics_validate(values, runtime_configuration=dict(runtime))


def _values(column: pa.ChunkedArray) -> Any:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_floating(column.type):
        return column.cast(pa.float64()).to_numpy()
    if t.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    return pa.table({"c": column}).to_pandas(types_mapper=_nullable_dtype)["c"].array


def _nullable_dtype(arrow_type: pa.DataType) -> Any:
    """pandas' ``numpy_nullable`` dtype for an Arrow type, as ``pd.read_parquet`` picks it."""
    import pandas as pd
    import pyarrow.types as t

    if t.is_signed_integer(arrow_type):
        return pd.api.types.pandas_dtype(f"Int{arrow_type.bit_width}")
    if t.is_unsigned_integer(arrow_type):
        return pd.api.types.pandas_dtype(f"UInt{arrow_type.bit_width}")
    if t.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        return pd.StringDtype()
    return None  # Arrow's own conversion (timestamps, decimals, ...)


def _ephemeral_context(gx: Any) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Progress bars default to on (tqdm "Calculating Metrics" on stderr, i.e.
    # in the task log); the temp docs site only logs a line and is never built.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)
