"""Hash partitions of a Parquet table: batches of bounded size in which equal keys meet.

A check that compares rows with each other (no (user_id, item_id) pair twice)
holds on a table exactly when it holds on every part of a partition of the
table by a hash of the compared columns, since rows with equal keys share a
part. The parts are written once, as uncompressed Arrow IPC files (written and
read back at memory speed), so memory holds one read batch or one part at a
time, never the table. Every row carries its row number in the file (column
:data:`ROW`), so whatever reports on a part can name the table's rows.

pyarrow, NumPy and Polars are imported inside the functions: Airflow imports
this package while parsing DAG files.
"""

from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: The column that holds each row's 0-based row number in the source file.
ROW = "__factorflow_row"
#: Rows read from the source file at a time while partitioning.
READ_ROWS = 1_000_000


def partition_parquet(
    path: str | Path,
    out_dir: str | Path,
    *,
    columns: Sequence[str],
    key: Sequence[str],
    n_parts: int,
    read_rows: int = READ_ROWS,
    on_rows: Callable[[int], None] | None = None,
) -> list[Path]:
    """Split a Parquet file into ``n_parts`` Arrow IPC files by a hash of ``key``.

    Args:
        path: the Parquet file.
        out_dir: an existing directory for the parts.
        columns: the columns to keep (``key`` among them, unless empty).
        key: columns whose equal values must land in one part; empty: any
            split (by a hash of the row number).
        n_parts: number of parts, >= 1; parts hold about ``rows / n_parts`` rows.
        read_rows: rows read from ``path`` at a time.
        on_rows: called with the number of rows read so far after each read.

    Returns:
        The files of the non-empty parts, in part order; each holds ``columns``
        and :data:`ROW` (int64), its rows in file order. A file without rows
        gives one empty part, so a caller always has a batch with the schema.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    files = [Path(out_dir) / f"part-{k:05d}.arrow" for k in range(n_parts)]
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    done = 0
    # pre_buffer=False: the pre-buffered reader keeps what it read until closed.
    with pq.ParquetFile(path, pre_buffer=False) as source:
        try:
            for batch in source.iter_batches(batch_size=read_rows, columns=list(columns)):
                rows = pa.array(np.arange(done, done + batch.num_rows, dtype=np.int64))
                batch = batch.append_column(ROW, rows)
                part = _part_of(batch, key or [ROW], n_parts)
                # A stable sort keeps each part's rows in file order.
                batch = batch.take(np.argsort(part, kind="stable"))
                stops = np.cumsum(np.bincount(part, minlength=n_parts))
                for k, (start, stop) in enumerate(zip([0, *stops[:-1]], stops)):
                    if stop > start:
                        if k not in writers:
                            writers[k] = ipc.new_file(files[k], batch.schema)
                        writers[k].write_batch(batch.slice(start, stop - start))
                done += batch.num_rows
                if on_rows is not None:
                    on_rows(done)
            if not writers:
                schema = source.schema_arrow
                empty = pa.schema([schema.field(c) for c in columns]).append(pa.field(ROW, pa.int64()))
                writers[0] = ipc.new_file(files[0], empty)
        finally:
            for writer in writers.values():
                writer.close()
    return [files[k] for k in sorted(writers)]


def read_part(path: str | Path) -> pa.Table:
    """One part written by :func:`partition_parquet`, read into memory."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.OSFile(str(path), "rb") as source:
        return ipc.open_file(source).read_all()


def _part_of(batch: pa.RecordBatch, key: Sequence[str], n_parts: int) -> np.ndarray:
    """``[rows]`` part of each row: a hash of its ``key`` values modulo ``n_parts``."""
    import numpy as np
    import polars as pl

    # Polars hashes any column type (ints, strings, nulls) with a fixed seed;
    # one seed a column, so (a, b) and (b, a) differ.
    hashed = functools.reduce(operator.xor, [pl.col(c).hash(seed=i) for i, c in enumerate(key)])
    part = pl.from_arrow(batch.select(list(key))).select(hashed % n_parts).to_series().to_numpy()
    # The smallest unsigned type: NumPy's stable sort is a radix sort up to 16 bits.
    return part.astype(np.min_scalar_type(n_parts - 1))
