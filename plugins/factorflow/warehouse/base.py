"""The warehouse interface both back ends implement, and the publish steps they share.

A :class:`Warehouse` holds one target (a DuckDB file or a PostgreSQL database)
and answers every operation the stages, the CLI and the DAGs need. The order
of a publish (schema, id-type check, replace the model's rows, record its runs,
point ``current_*`` at it, drop expired models), the rollback and the
recommendations table are written here once; a back end supplies its
sessions, its locking and how it moves staged rows in. Each dialect's SQL is
``include/sql/<dialect>/<file>``, with the same query names in every dialect.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Mapping

from factorflow.paths import read_queries, read_sql
from factorflow.warehouse.identifiers import quote_identifier

log = logging.getLogger(__name__)

#: Named queries of ``publish.sql`` that create or migrate the published schema,
#: in order (a dialect's file may lack some: DuckDB needs no SQL functions).
SCHEMA_STEPS = ("create_schema", "create_model_runs", "migrate_model_runs", "create_pointer",
                "create_user_factors", "create_item_factors", "migrate_item_factors",
                "create_predictions", "create_functions", "create_views")
#: ``publish.sql``'s queries that load a staged model's three tables, in order.
INSERTS = ("insert_user_factors", "insert_item_factors", "insert_predictions")


class ParentNotCurrentError(LookupError):
    """A fold-in's model extends a model that is no longer current (another was published)."""


class WarehouseLockedError(RuntimeError):
    """Another process or session held the warehouse's write lock past the wait allowed."""


class WarehouseFileError(ValueError):
    """The warehouse file is not a database this back end can open (another format, another
    storage version, a damaged header); nothing was written to it. The same file fails the
    same way on every try, so it is not retried."""


class WarehouseUnavailableError(ConnectionError):
    """The warehouse's server could not be reached."""


class _Unfilled(dict):
    """Format fields a query family leaves for later stay as they are (``{width}``)."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def statements(sql: str) -> list[str]:
    """The ``;``-separated statements of one named query, comments dropped.

    A ``$$ ... $$`` body (a Postgres function) stays one statement.
    """
    lines = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    parts, out = lines.split("$$"), [""]
    for i, part in enumerate(parts):
        if i % 2:  # inside a dollar-quoted body
            out[-1] += "$$" + part + "$$"
            continue
        chunks = part.split(";")
        out[-1] += chunks[0]
        out.extend(chunks[1:])
    return [s.strip() for s in out if s.strip()]


def run_statements(cur: Any, sql: str, params: Mapping[str, Any] | None = None) -> None:
    """Every statement of ``sql`` on one cursor, each with ``params``."""
    for statement in statements(sql):
        cur.execute(statement, params)


def wide_factors_sql(*, rank: int, which: str = "user", schema: str = "factorflow") -> str:
    """``CREATE VIEW <schema>.current_<which>_factors_wide`` with columns ``f1 .. f<rank>``.

    The wide-column layout for tools or warehouses without array types: one
    REAL column per factor. The same SQL runs on DuckDB and PostgreSQL (both
    index arrays from 1). A pair's score is then
    ``global_mean + u.bias + i.bias + u.f1 * i.f1 + ... + u.fk * i.fk``.

    Args:
        rank: number of factor columns (``len(factors)`` of the model).
        which: ``"user"`` or ``"item"``.
        schema: the publish schema.
    """
    if which not in ("user", "item"):
        raise ValueError(f"which must be 'user' or 'item', got {which!r}")
    if not 1 <= int(rank) <= 4096:
        raise ValueError(f"rank must be in 1..4096, got {rank}")
    quoted = quote_identifier(schema)
    columns = ", ".join(f"factors[{k}] AS f{k}" for k in range(1, int(rank) + 1))
    return (f"CREATE OR REPLACE VIEW {quoted}.current_{which}_factors_wide AS "
            f"SELECT model_id, {which}_id, bias, {columns} FROM {quoted}.current_{which}_factors")


class Warehouse(ABC):
    """One warehouse target; subclasses are the back ends (DuckDB, PostgreSQL).

    Attributes:
        dialect: the folder of ``include/sql/`` its SQL is read from.
        id_types: ``"integer"``/``"string"`` ids -> the SQL type of id columns.
    """

    dialect: str = ""
    id_types: Mapping[str, str] = {}

    @property
    @abstractmethod
    def name(self) -> str:
        """How logs, errors and summaries name the target (never with a password)."""

    # --- what a back end supplies ---------------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """A cursor in one read-write transaction, committed on success, else rolled back."""

    @abstractmethod
    def run_query(self, file: str, name: str, *, schema: str = "factorflow",
                  params: Mapping[str, Any] | None = None,
                  fields: Mapping[str, str] | None = None) -> tuple[list[str], list[tuple]]:
        """One named read-only query of ``include/sql/<dialect>/<file>``.

        ``params`` are bound; ``fields`` fill ``{name}`` placeholders besides
        ``{schema}`` and must be quoted identifiers (never values).

        Returns:
            ``(column names, rows)``.

        Raises:
            LookupError: nothing is published in ``schema`` yet.
        """

    @abstractmethod
    def extract_ratings(self, source_table: str, out: Any) -> None:
        """Write ``source_table``'s rating columns to the Parquet file ``out``, read-only.

        Raises:
            FileNotFoundError: a DuckDB warehouse file does not exist.
            ValueError: the table does not exist.
        """

    @abstractmethod
    def replace_table(self, table: str, data: Any) -> int:
        """Create or replace ``table`` with an Arrow table's rows; returns the row count."""

    @abstractmethod
    def _publish_session(self, schema: str, lock_timeout: float) -> AbstractContextManager[Any]:
        """The publish's transaction, holding the back end's write lock for ``schema``."""

    @abstractmethod
    def _staged_rows(self, staged: Any) -> dict[str, Any]:
        """``INSERTS`` name -> the rows that query loads, prepared before the lock is taken."""

    @abstractmethod
    def _insert(self, cur: Any, sql: str, model_id: str, rows: Any) -> None:
        """Load one table's prepared rows with ``publish.sql``'s insert query."""

    def _create_schema(self, cur: Any, q: Mapping[str, str], schema: str) -> None:
        """Create or migrate the published schema (the ``SCHEMA_STEPS`` a back end needs)."""
        for name in SCHEMA_STEPS:
            run_statements(cur, q.get(name, ""))

    def _point_views(self, cur: Any, q: Mapping[str, str], model_id: str) -> None:
        """After a rollback: whatever the ``current_*`` views need to show ``model_id``."""

    # --- shared -------------------------------------------------------------------------

    def queries(self, file: str, schema: str, **fields: Any) -> dict[str, str]:
        """The named queries of this dialect's ``file``, ``{schema}`` and ``fields`` filled in."""
        fill = _Unfilled(schema=quote_identifier(schema), **fields)
        return {k: v.format_map(fill) for k, v in read_queries(f"{self.dialect}/{file}").items()}

    def publish(self, staged: Any, *, schema: str = "factorflow", keep: int = 5,
                lock_timeout: float = 60.0) -> dict[str, Any]:
        """Write a staged model (:func:`factorflow.stages.publish.stage_model`) in one transaction.

        Readers see the previous model or the new one, never a mix; a failure
        part-way leaves every table as it was. Rows already stored under the
        model id are replaced; models beyond the newest ``keep`` are deleted. A
        staged model with a ``parent`` (a fold-in) gets every row of the parent
        that it does not hold itself, copied in the same transaction.

        Raises:
            WarehouseLockedError: another writer held the lock past ``lock_timeout`` seconds.
            ValueError: the published tables hold another id type than this model.
            ParentNotCurrentError: the ``parent`` is no longer the current model.
        """
        if int(keep) < 1:
            raise ValueError(f"keep must be >= 1 (the new model is always kept), got {keep}")
        q = self.queries("publish.sql", schema,
                         user_id_type=self.id_types[staged.id_kind("user")],
                         item_id_type=self.id_types[staged.id_kind("item")], width=staged.width)
        rows = self._staged_rows(staged)
        asked = time.monotonic()
        with self._publish_session(schema, lock_timeout) as cur:
            # these two lines bracket the lock (a test reads them to show publishes never overlap)
            log.info("publish lock of %s schema %s taken after %.1f s; writing model %s",
                     self.name, schema, time.monotonic() - asked, staged.model_id)
            self._create_schema(cur, q, schema)
            self._check_id_types(cur, q["column_type"], schema, staged)
            run_statements(cur, q["delete_models"], {"model_ids": [staged.model_id]})
            parent = getattr(staged, "parent", None)
            if parent is not None:
                self._check_parent_current(cur, q, schema, staged.model_id, parent)
            for name in INSERTS:
                self._insert(cur, q[name], staged.model_id, rows[name])
            if parent is not None:
                run_statements(cur, q["copy_parent_rows"],
                               {"model_id": staged.model_id, "parent": parent})
            for run in (staged.run, *staged.candidates):
                cur.execute(q["insert_model_run"], run)
            cur.execute(q["point_current"], {"model_id": staged.model_id})
            cur.execute(q["expired_models"], {"keep": int(keep)})
            expired = [row[0] for row in cur.fetchall()]
            if expired:
                run_statements(cur, q["delete_models"], {"model_ids": expired})
            log.info("model %s written to %s schema %s; committing", staged.model_id,
                     self.name, schema)
        summary = {"warehouse": self.name, "schema": schema, **staged.summary()}
        log.info("published model %s to %s.%s: %s", staged.model_id, self.name, schema, summary)
        return summary

    def _check_parent_current(self, cur: Any, q: Mapping[str, str], schema: str, model_id: str,
                              parent: str) -> None:
        """A derived model (a fold-in) extends the current model, or is not published."""
        cur.execute(q["current_model_id"])
        rows = cur.fetchall()  # DuckDB: a result not read to its end blocks the connection
        current = rows[0][0] if rows else None
        if current != parent:
            raise ParentNotCurrentError(
                f"model {model_id} extends {parent}, but the current model of {self.name} "
                f"schema {schema} is now {current}: nothing was written; the next run folds "
                "in against the current model")

    def _check_id_types(self, cur: Any, query: str, schema: str, staged: Any) -> None:
        """Fail clearly when a new model's id type differs from the published tables'."""
        expected = {("user_factors", "user_id"): self.id_types[staged.id_kind("user")],
                    ("item_factors", "item_id"): self.id_types[staged.id_kind("item")]}
        for (table, column), want in expected.items():
            cur.execute(query, {"schema": schema, "table": table, "column": column})
            (have,) = cur.fetchone()
            if have != want:
                raise ValueError(
                    f"{schema}.{table}.{column} holds {have} ids but this model's ids are {want}: "
                    "publish to another schema or migrate the table")

    def rollback(self, *, to: str, schema: str = "factorflow") -> dict[str, Any]:
        """Point the ``current_*`` views at an earlier kept model.

        The SQL it runs is ``UPDATE <schema>.current_pointer SET model_id = <to>
        WHERE name = 'current'`` (``include/sql/<dialect>/publish.sql``, ``rollback``).

        Raises:
            LookupError: ``to`` is not a kept model of this schema.
        """
        q = self.queries("publish.sql", schema)
        with self.transaction() as cur:
            cur.execute(q["model_exists"], {"model_id": to})
            if not cur.fetchone()[0]:
                raise LookupError(f"no kept model {to!r} in {self.name} schema {schema}")
            cur.execute(q["rollback"], {"model_id": to})
            self._point_views(cur, q, to)
        return {"warehouse": self.name, "schema": schema, "current_model": to}

    def materialize_recommendations(self, *, schema: str = "factorflow") -> dict[str, Any]:
        """Rebuild ``<schema>.recommendations_daily`` from ``current_predictions``, in one transaction.

        Returns:
            ``{"table": name, "rows": n}``.
        """
        quoted = quote_identifier(schema)
        with self.transaction() as cur:
            run_statements(cur, read_sql(f"{self.dialect}/recommendations_daily.sql")
                           .format(schema=quoted))
            cur.execute(f"SELECT count(*) FROM {quoted}.recommendations_daily")
            (rows,) = cur.fetchone()
        return {"table": f"{schema}.recommendations_daily", "rows": int(rows)}

    def latest_result(self, *, schema: str = "factorflow", user_id: Any = None,
                      top_n: int = 5) -> dict[str, Any]:
        """The current model's metrics and one user's top recommendations.

        Args:
            schema: schema the models were published to.
            user_id: the user to show; defaults to the smallest published user id.
            top_n: number of recommendations.

        Returns:
            ``{"model": {...run columns...}, "user_id": id, "recommendations": [{rank, item_id, score}]}``.
        """
        columns, rows = self.run_query("latest_result.sql", "latest_model", schema=schema)
        if not rows:
            raise LookupError(f"no model published in {self.name} schema {schema}")
        model = dict(zip(columns, rows[0]))
        if user_id is None:
            [(user_id,)] = self.run_query("latest_result.sql", "first_user", schema=schema,
                                          params={"model_id": model["model_id"]})[1]
        _, recs = self.run_query("latest_result.sql", "top_predictions", schema=schema,
                                 params={"model_id": model["model_id"], "user_id": user_id,
                                         "top_n": top_n})
        return {"model": model, "user_id": user_id,
                "recommendations": [dict(zip(("rank", "item_id", "score"), r)) for r in recs]}
