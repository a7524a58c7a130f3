"""The warehouse: one interface, its back end (DuckDB or PostgreSQL) chosen once, here.

Callers open a target with :func:`open_warehouse` and use the
:class:`~factorflow.warehouse.base.Warehouse` it returns.

Importing the package stays light (the trigger form's params import
:mod:`factorflow.warehouse.identifiers` at DAG parse time): the back ends, and
DuckDB, psycopg and pyarrow with them, load when a warehouse is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from factorflow.warehouse.base import Warehouse


def open_warehouse(target: Any) -> "Warehouse":
    """The back end for ``target``: PostgreSQL for a ``postgresql://`` URI or a
    :class:`~factorflow.warehouse.postgres_targets.PostgresTarget`, else a DuckDB file.

    Opening connects to nothing: each operation opens its own session. A
    Warehouse given here is returned as it is.
    """
    from factorflow.warehouse.base import Warehouse
    from factorflow.warehouse.postgres_targets import is_postgres

    if isinstance(target, Warehouse):
        return target
    if is_postgres(target):
        from factorflow.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(target)
    from factorflow.warehouse.duckdb import DuckDBWarehouse

    return DuckDBWarehouse(target)
