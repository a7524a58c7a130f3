"""A real Airflow deployment on this machine, for integration tests.

CeleryExecutor against the local PostgreSQL (a fresh metadata database per
stack) and Redis, with api-server, scheduler, dag-processor and one Celery
worker per queue, each its own process group. ``stop()`` ends every group it
started (SIGTERM, then SIGKILL) and drops the database, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

from tests.conftest import ROOT

PG_ADMIN = os.environ.get("FACTORFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = ("127.0.0.1", 6379)
REDIS_DB = 11  # flushed at start and stop; kept apart from db 0


def redis_skip_reason() -> str | None:
    try:
        with socket.create_connection(REDIS, timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                return f"Redis at {REDIS[0]}:{REDIS[1]} did not answer PING"
    except OSError as exc:
        return f"Redis not reachable at {REDIS[0]}:{REDIS[1]}: {exc}"
    return None


def _redis(*command: str) -> None:
    """One Redis command on REDIS_DB (raw RESP, no client library needed)."""
    def resp(*args: str) -> str:
        return f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)

    with socket.create_connection(REDIS, timeout=5) as sock:
        sock.sendall((resp("SELECT", str(REDIS_DB)) + resp(*command)).encode())
        sock.recv(256)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowStack:
    """Start with :meth:`start`; always :meth:`stop` (a fixture's finalizer)."""

    def __init__(self, home: Path, env: dict[str, str] | None = None):
        self.home = home
        self.port = free_port()
        self.database = f"ff_airflow_{uuid.uuid4().hex[:10]}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        pg = PG_ADMIN.rsplit("/", 1)[0]
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{pg.replace('postgresql://', 'postgresql+psycopg://')}/{self.database}",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{pg.replace('postgresql://', 'postgresql+psycopg://')}/{self.database}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs a test triggers
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.base,
            "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "JAX_PLATFORMS": "cpu",
            "GX_ANALYTICS_ENABLED": "false",
            **(env or {}),
        }
        self.env.pop("AIRFLOW__CORE__SQL_ALCHEMY_CONN", None)

    # -- life cycle -------------------------------------------------------
    def start(self, workers: dict[str, str], *, api_server_only: bool = False) -> None:
        """Create the metadata DB, migrate, then start every component.

        Args:
            workers: worker name -> queue it consumes.
            api_server_only: start only the api-server (pages and REST, no runs).
        """
        import psycopg

        if workers:
            _redis("FLUSHDB")
        with psycopg.connect(PG_ADMIN, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.database}"')
        self.home.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(["airflow", "db", "migrate"], env=self.env, capture_output=True,
                                 text=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
        self._spawn("api-server", ["airflow", "api-server", "--port", str(self.port)])
        if not api_server_only:
            self._spawn("scheduler", ["airflow", "scheduler"])
            self._spawn("dag-processor", ["airflow", "dag-processor"])
        for name, queue in workers.items():
            self._spawn(name, ["airflow", "celery", "worker", "--queues", queue, "--concurrency", "1",
                               "--celery-hostname", f"{name}@%h", "--without-mingle",
                               "--without-gossip"],
                        {"AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())})
        self.wait_for(lambda: self._get_status("/api/v2/monitor/health") == 200, 120,
                      "the api-server to answer")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.home / f"{name}.log"
        self.logs[name] = log
        self.commands[name] = (argv, env)
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(argv, env={**self.env, **(env or {})}, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """End every process group started here, then drop the database."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # children (task runners, gunicorn/uvicorn workers) too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            if redis_skip_reason() is None:
                _redis("FLUSHDB")
        except Exception as exc:  # never hide the test's own failure
            print(f"stack clean-up: {exc}", file=sys.stderr)

    def kill(self, name: str) -> list[int]:
        """SIGKILL component ``name`` and every process under it, as a lost machine would.

        Task processes run in process groups of their own, so the whole tree is
        collected first (no process can be reparented out of it mid-walk) and
        then killed at once. Returns the pids killed.
        """
        from tests.kills import descendants

        proc = self.procs[name]
        pids = [proc.pid, *descendants(proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        return pids

    def restart(self, name: str) -> None:
        """Start component ``name`` again, as it was started (its log continues)."""
        argv, env = self.commands[name]
        self._spawn(name, argv, env)

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def tail(self, name: str, n: int = 4000) -> str:
        return self.logs[name].read_text(errors="replace")[-n:] if name in self.logs else ""

    # -- REST -------------------------------------------------------------
    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, up in self.alive().items() if not up]
            assert not dead, f"{dead} exited:\n" + "\n".join(self.tail(d) for d in dead)
            value = predicate()
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def _get_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def password(self, user: str = "admin") -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())[user]

    def token(self, user: str = "admin") -> str:
        status, body = self.request("POST", "/auth/token",
                                    {"username": user, "password": self.password(user)}, token=None)
        assert status == 201, body
        return body["access_token"]

    def request(self, method: str, path: str, body: Any = None, *,
                token: str | None = "", headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """JSON request; ``token=""`` logs in as admin, ``None`` sends none."""
        if token == "":
            token = self.token()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


@contextlib.contextmanager
def running_stack(home: Path, env: dict[str, str], *, workers: dict[str, str] | None = None,
                  api_server_only: bool = False, dags: tuple[str, ...] = ()) -> Iterator[AirflowStack]:
    """An :class:`AirflowStack` started in ``home``, stopped (every process group) on exit.

    Skips the calling test where PostgreSQL (the metadata DB), or Redis when
    Celery ``workers`` are asked for, is missing; waits until the dag-processor
    has parsed each of ``dags``; fails if a component outlives ``stop()``.
    """
    import pytest

    from tests.warehouses import postgres_skip_reason

    for reason in (postgres_skip_reason(), redis_skip_reason() if workers else None):
        if reason:
            pytest.skip(reason)
    stack = AirflowStack(home, env=env)
    try:
        stack.start(workers or {}, api_server_only=api_server_only)
        for dag_id in dags:
            stack.wait_for(lambda d=dag_id: stack.request("GET", f"/api/v2/dags/{d}")[0] == 200,
                           180, f"the dag-processor to parse {dag_id}")
        yield stack
    finally:
        stack.stop()
        assert not any(stack.alive().values()), "a component outlived stop()"
