"""Static checks of the deployment files: docker-compose.yml, Dockerfile, Dockerfile.gpu.

Nothing here needs Docker: the compose file is parsed and validated against the
compose-spec JSON schema (bundled with check-jsonschema), its wiring is checked
by hand, and the images' pins are compared with requirements.txt.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.dags.helpers import load_dags

pytestmark = pytest.mark.unit

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERFILE_GPU = ROOT / "Dockerfile.gpu"
REQUIREMENTS = ROOT / "requirements.txt"

GPU_WORKER = "airflow-worker-gpu"
CPU_WORKER = "airflow-worker"
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer", CPU_WORKER, GPU_WORKER)
CONTAINER_MOUNTS = {"/opt/airflow/dags": "./dags", "/opt/airflow/plugins": "./plugins",
                    "/opt/airflow/include": "./include", "/opt/airflow/data": "warehouse"}
# Keys a service may set differently from the x-airflow-common environment.
ENV_OVERRIDES = {
    "airflow-init": {"_AIRFLOW_DB_MIGRATE", "_FACTORFLOW_ADMIN_USERNAME", "_FACTORFLOW_ADMIN_PASSWORD",
                     "_FACTORFLOW_JWT_SECRET", "_FACTORFLOW_API_SECRET_KEY", "_FACTORFLOW_FERNET_KEY"},
    CPU_WORKER: {"DUMB_INIT_SETSID"},
    GPU_WORKER: {"DUMB_INIT_SETSID", "AIRFLOW__CELERY__WORKER_CONCURRENCY", "JAX_PLATFORMS",
                 "XLA_PYTHON_CLIENT_PREALLOCATE"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE.open() as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def common(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["x-airflow-common"]


def pins() -> dict[str, str]:
    """``{lower-case name: version}`` of the ``name==version`` lines of requirements.txt."""
    out = {}
    for line in REQUIREMENTS.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            out[match[1].lower().replace("_", "-")] = match[2]
    return out


def argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def worker_queues(service: dict[str, Any]) -> set[str] | None:
    """Queues of an ``airflow celery worker`` service; None when it is not one."""
    args = argv(service.get("command", []))
    if args[:2] != ["celery", "worker"]:
        return None
    for i, arg in enumerate(args):
        if arg in ("-q", "--queues"):
            return set(args[i + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    # No flag: Airflow's [operators] default_queue, set in the common env.
    env = service.get("environment", {})
    return {env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """``{container path: source}`` of a service's short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        out[target] = source
    return out


# -- the compose file as a whole ------------------------------------------------


def test_compose_parses_to_a_mapping_of_services(compose):
    assert isinstance(compose, dict)
    assert {"postgres", "redis", *AIRFLOW_SERVICES} <= set(compose["services"])


def test_compose_validates_against_the_compose_spec_schema():
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_depends_on_names_a_defined_service(services):
    valid_conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, service in services.items():
        deps = service.get("depends_on", {})
        names = deps if isinstance(deps, list) else list(deps)
        for dep in names:
            assert dep in services, f"{name} depends on undefined service {dep!r}"
            assert dep != name
            if isinstance(deps, dict):
                assert deps[dep].get("condition", "service_started") in valid_conditions


def test_healthchecked_dependencies_wait_for_health(services):
    for name, service in services.items():
        deps = service.get("depends_on", {})
        if not isinstance(deps, dict):
            continue
        for dep, spec in deps.items():
            if dep == "airflow-init":
                assert spec["condition"] == "service_completed_successfully", name
            elif "healthcheck" in services[dep]:
                assert spec["condition"] == "service_healthy", f"{name} -> {dep}"


def test_metadata_db_and_broker_have_healthchecks(services):
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert "/api/v2/version" in " ".join(argv(services["airflow-apiserver"]["healthcheck"]["test"]))
    assert argv(services["airflow-apiserver"]["command"]) == ["api-server"]
    assert any(p.split(":")[-1] == "8080" for p in services["airflow-apiserver"]["ports"])


def test_warehouse_is_a_named_volume(compose):
    assert "warehouse" in compose["volumes"]


# -- Airflow services share one configuration -----------------------------------


def test_common_env_runs_celery_on_postgres_and_redis(common):
    env = env_of(common)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert "@postgres" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@redis:" in env["AIRFLOW__CELERY__BROKER_URL"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql")
    assert "@postgres" in env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
    # Components in different containers must agree on the token-signing secret
    # (tests/test_deployment_secrets.py: one file, read by every container).
    assert env["AIRFLOW__API_AUTH__JWT_SECRET_CMD"]


def test_common_env_points_factorflow_at_the_mounts(common):
    env = env_of(common)
    assert env["FACTORFLOW_INCLUDE_DIR"] == "/opt/airflow/include"
    assert env["FACTORFLOW_WAREHOUSE"] == "/opt/airflow/data/warehouse.duckdb"
    assert env["FACTORFLOW_ARTIFACTS_DIR"] == "/opt/airflow/data/artifacts"


def test_simple_auth_manager_users_and_password_file(common, services):
    env = env_of(common)
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    password_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    # The file must live on a volume the init container writes and the API server reads.
    directory = str(Path(password_file).parent)
    for name in ("airflow-init", "airflow-apiserver"):
        assert directory in mounts(services[name]), name
    init = services["airflow-init"]
    assert env_of(init)["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" in "\n".join(argv(init["command"]))


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_shares_env_and_mounts(name, common, services):
    service = services[name]
    env, common_env = env_of(service), env_of(common)
    allowed = ENV_OVERRIDES.get(name, set())
    changed = {key for key in common_env if env.get(key) != common_env[key]} - allowed
    assert not changed, f"{name} differs from x-airflow-common in {sorted(changed)}"
    assert set(env) - set(common_env) <= allowed
    for target, source in CONTAINER_MOUNTS.items():
        assert mounts(service).get(target) == source, f"{name} lacks {source}:{target}"
    assert service["volumes"] == common["volumes"]


@pytest.mark.parametrize("name", [n for n in AIRFLOW_SERVICES if n != GPU_WORKER])
def test_airflow_service_uses_the_cpu_image(name, common, services):
    assert services[name]["image"] == common["image"]
    assert services[name]["build"] == common["build"]
    assert common["build"]["dockerfile"] == "Dockerfile"


# -- queues ---------------------------------------------------------------------


def test_gpu_worker_consumes_only_gpu_and_reserves_an_nvidia_device(services, common):
    gpu = services[GPU_WORKER]
    assert worker_queues(gpu) == {"gpu"}
    assert gpu["build"]["dockerfile"] == "Dockerfile.gpu"
    assert gpu["image"] != common["image"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") == "all" or int(d.get("count", 0)) >= 1) for d in devices)
    env = env_of(gpu)
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "1"
    assert env.get("JAX_PLATFORMS", "") in ("", "cuda")


def test_no_other_worker_consumes_gpu_and_the_cpu_worker_consumes_default(services):
    queues = {name: worker_queues(s) for name, s in services.items()}
    workers = {name: q for name, q in queues.items() if q is not None}
    assert set(workers) == {CPU_WORKER, GPU_WORKER}
    assert "default" in workers[CPU_WORKER]
    assert [name for name, q in workers.items() if "gpu" in q] == [GPU_WORKER]


@pytest.fixture(scope="module")
def dag_in_compose_env(common):
    """The DAG as parsed with the compose file's FACTORFLOW_GPU_QUEUE."""
    return load_dags(FACTORFLOW_GPU_QUEUE=env_of(common).get("FACTORFLOW_GPU_QUEUE"))[
        "factorize_ratings"]


def test_train_task_goes_to_the_gpu_workers_queue_and_nothing_else_does(dag_in_compose_env,
                                                                        services):
    dag = dag_in_compose_env
    gpu_queues = worker_queues(services[GPU_WORKER])
    cpu_queues = worker_queues(services[CPU_WORKER])
    assert dag.get_task("train").queue in gpu_queues
    for task in dag.tasks:
        if task.task_id != "train":
            assert task.queue not in gpu_queues, task.task_id
            assert task.queue in cpu_queues, task.task_id


# -- images ---------------------------------------------------------------------


def from_tags(dockerfile: Path) -> list[str]:
    return re.findall(r"^FROM\s+(?:--\S+\s+)*(\S+)", dockerfile.read_text(), re.MULTILINE)


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, DOCKERFILE_GPU], ids=lambda p: p.name)
def test_image_base_matches_the_airflow_pin(dockerfile):
    airflow = pins()["apache-airflow"]
    assert from_tags(dockerfile) == [f"apache/airflow:{airflow}-python3.11"]
    text = dockerfile.read_text()
    assert re.search(r"^COPY\s+.*requirements\.txt\s+/requirements\.txt", text, re.MULTILINE)
    assert re.search(r"pip install .*-r /requirements\.txt", text)
    # pip must run as the image's airflow user, not root.
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] == "airflow"


def test_gpu_image_installs_the_cuda_plugin_of_the_pinned_jax():
    requirements = pins()
    jax = requirements["jax"]
    assert requirements["jaxlib"] == jax
    text = DOCKERFILE_GPU.read_text()
    jax_pins = re.findall(r"\b(jax(?:lib)?(?:-cuda\d+-(?:plugin|pjrt))?)(\[[\w,]+\])?==([\w.]+)", text)
    names = {name for name, _, _ in jax_pins}
    assert {"jax", "jax-cuda12-plugin", "jax-cuda12-pjrt"} <= names or \
        {"jax", "jax-cuda13-plugin", "jax-cuda13-pjrt"} <= names, jax_pins
    assert any(name == "jax" and re.fullmatch(r"\[cuda1[23]\]", extra) for name, extra, _ in jax_pins)
    for name, _, version in jax_pins:
        assert version == jax, f"{name}=={version} in Dockerfile.gpu, jax=={jax} in requirements.txt"
    # The runtime check after the install names the same version.
    assert f"'{jax}'" in text


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    entries = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".airflow", "data", ".git", "__pycache__"} <= entries
