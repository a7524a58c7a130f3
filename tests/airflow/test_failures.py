"""The retry decision on real exceptions: raised by DuckDB, psycopg, NumPy, JAX and the engine."""

from __future__ import annotations

import pytest

from factorflow.airflow.failures import classify, memory_message, no_retry
from tests.warehouses import hold_duckdb_lock

pytestmark = pytest.mark.unit


def _raised(fn, *args, **kwargs) -> BaseException:
    with pytest.raises(BaseException) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.fixture
def locked_duckdb(tmp_path):
    """A DuckDB file another process holds open for writing."""
    path = tmp_path / "locked.duckdb"
    holder = hold_duckdb_lock(path, 120)
    yield path
    holder.kill()
    holder.wait()


class TestTransient:
    def test_a_locked_duckdb_file(self, locked_duckdb):
        import duckdb

        exc = _raised(duckdb.connect, str(locked_duckdb), read_only=True)
        assert "lock" in str(exc) and classify(exc) == "transient"
        assert no_retry(exc) is None

    def test_the_publishers_lock_timeout(self, locked_duckdb):
        from factorflow.warehouse.base import WarehouseLockedError
        from factorflow.warehouse.duckdb import DuckDBWarehouse

        exc = _raised(DuckDBWarehouse(locked_duckdb).connect_for_write, timeout=0.3, first_wait=0.1)
        assert isinstance(exc, WarehouseLockedError) and classify(exc) == "transient"

    def test_a_refused_postgres_connection(self):
        import psycopg

        from factorflow.warehouse.postgres_targets import transaction

        exc = _raised(psycopg.connect, "postgresql://postgres@127.0.0.1:1/test", connect_timeout=3)
        assert classify(exc) == "transient"
        wrapped = _raised(transaction("postgresql://postgres@127.0.0.1:1/test").__enter__)
        assert classify(wrapped) == "transient"  # WarehouseUnavailableError, a ConnectionError

    def test_anything_unrecognised_keeps_its_retries(self):
        exc = RuntimeError("the scheduler restarted")
        assert classify(exc) == "unknown" and no_retry(exc) is None


class TestMemory:
    def test_numpy_out_of_host_memory(self):
        import numpy as np

        exc = _raised(np.ones, 2**42, dtype=np.uint8)
        assert classify(exc) == "memory"
        assert "ran out of host memory (RAM)" in memory_message(exc, stage="build")

    def test_xla_resource_exhausted_even_when_wrapped(self):
        import jax.numpy as jnp

        exc = _raised(lambda: jnp.zeros(2**40, jnp.float32).block_until_ready())
        assert classify(exc) == "memory"
        try:
            raise RuntimeError("fit failed") from exc
        except RuntimeError as wrapper:
            assert classify(wrapper) == "memory"
        assert "XLA RESOURCE_EXHAUSTED" in memory_message(exc, stage="train")

    def test_a_class_named_out_of_memory_error(self):
        class OutOfMemoryError(RuntimeError):  # the engine's, by name
            pass

        failure = no_retry(OutOfMemoryError("the item factors need 40 GB"), stage="train",
                           rank=256)
        assert type(failure).__name__ == "AirflowFailException"
        assert ("train ran out of memory (OutOfMemoryError): the item factors need 40 GB."
                in str(failure))
        assert "lower rank (now 256)" in str(failure)


    def test_the_engines_own_out_of_memory_error_keeps_its_advice(self):
        import jax.numpy as jnp

        from factorflow.engine.memory import memory_guard

        def fit():
            with memory_guard("fitting the model"):
                jnp.zeros(2**40, jnp.float32).block_until_ready()

        exc = _raised(fit)
        assert type(exc).__name__ == "OutOfMemoryError" and classify(exc) == "memory"
        message = memory_message(exc, stage="train", rank=64)
        assert message.startswith("train: out of memory while fitting the model")
        assert "not retried" in message and "To fit" not in message  # the engine's advice only


class TestDeterministic:
    def test_a_diverging_loss_and_a_refused_setting(self, small_model, tmp_path):
        from factorflow.engine import TrainingDivergedError
        from factorflow.stages.train import train_factors

        diverged = _raised(train_factors, small_model["matrix_dir"], tmp_path / "a", rank=4,
                           epochs=3, optimizer="sgd", learning_rate=10.0)
        refused = _raised(train_factors, small_model["matrix_dir"], tmp_path / "b", rank=4,
                          epochs=3, optimizer="gibbs", restarts=2)
        assert isinstance(diverged, TrainingDivergedError)
        for exc in (diverged, refused):
            assert classify(exc) == "deterministic"
            assert str(no_retry(exc)) == str(exc)

    def test_a_damaged_artifact_and_a_warehouse_that_is_not_duckdb(self, tmp_path):
        """Real errors: a half .npz from the build, and a text file given as the warehouse
        (DuckDB's own error for it is an IOException, which alone would be retried)."""
        import duckdb
        import numpy as np

        from factorflow.engine.triplets import Triplets
        from factorflow.engine.artifacts import ArtifactError
        from factorflow.warehouse.base import WarehouseFileError
        from factorflow.warehouse.duckdb import DuckDBWarehouse

        path = tmp_path / "train.npz"
        Triplets(np.arange(9, dtype=np.int32), np.arange(9, dtype=np.int32),
                 np.ones(9, np.float32)).save(path)
        path.write_bytes(path.read_bytes()[:200])
        artifact = _raised(Triplets.load, path)
        text = tmp_path / "warehouse.duckdb"
        text.write_text("not a database\n")
        warehouse = _raised(DuckDBWarehouse(text).connect_for_write, timeout=0.3)
        assert isinstance(artifact, ArtifactError) and isinstance(warehouse, WarehouseFileError)
        assert classify(_raised(duckdb.connect, str(text))) == "transient"  # what we replace
        for exc in (artifact, warehouse):
            assert classify(exc) == "deterministic"
            assert str(no_retry(exc)) == str(exc)
        assert str(artifact) == f"{path} is not a readable .npz (truncated?): write it again"
