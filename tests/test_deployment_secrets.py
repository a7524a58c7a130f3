"""The compose stack's secrets: none written in docker-compose.yml, made on first start.

A secret with a default in the public file is a secret anyone can read: a
deployment that forgot to override the JWT secret would accept forged tokens.
The static checks read the file as ``docker compose`` does (YAML, then the
``${VAR...}`` interpolation of its strings, here with no variable set); the others run the
airflow-init container's secrets step, taken from the file as written, against
a temporary folder standing for the airflow-config volume, and read the result
back through Airflow's own configuration, as every container does.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_deployment import AIRFLOW_SERVICES, COMPOSE, argv, env_of, mounts

pytestmark = pytest.mark.unit

CONFIG = "/opt/airflow/config"  # the airflow-config volume, where the secrets are kept
#: The Airflow options that hold secrets, each read by every container from a file.
SECRET_OPTIONS = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY",
                  "AIRFLOW__CORE__FERNET_KEY")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|FERNET|TOKEN|_KEY(?:_|$)")
#: Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $$.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """``text`` with compose's ``${...}`` replaced from ``variables``; ValueError for ``:?``."""

    def value(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"]
        given = variables.get(name)
        missing = given is None or (op.startswith(":") and given == "")
        if missing and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return (arg if op else "") if missing else given

    return VARIABLE.sub(value, text)


def resolve(node, variables: dict[str, str]):
    """The parsed compose file with every string interpolated, as compose does after YAML."""
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, dict):
        return {key: resolve(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, variables) for value in node]
    return node


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_no_variable_in_the_file_defaults_to_a_secret():
    text = COMPOSE.read_text()
    for match in VARIABLE.finditer(text):
        if match["name"] and SECRET_NAME.search(match["name"]) and match["op"]:
            assert match["op"] in (":-", "-") and match["arg"] == "", \
                f"{match[0]} in docker-compose.yml: a secret must not have a written default"
    assert "change-me" not in text


def test_without_variables_every_secret_is_empty_or_read_from_the_config_volume(services):
    """What ``docker compose up`` sees with no .env: nothing fixed, nothing refused."""
    resolved = resolve(yaml.safe_load(COMPOSE.read_text()), {})["services"]
    for name, service in resolved.items():
        for key, value in env_of(service).items():
            if not SECRET_NAME.search(key) or name == "postgres":
                continue
            if key.endswith("_CMD"):
                assert re.fullmatch(rf"cat {CONFIG}/\w+", value), (name, key, value)
            elif key.endswith("_FILE"):
                assert value.startswith(f"{CONFIG}/"), (name, key, value)
            else:  # the secrets step's inputs: empty unless set in .env
                assert name == "airflow-init" and key.startswith("_FACTORFLOW_"), (name, key)
                assert value == "", f"{name}: {key} defaults to {value!r}"
    # PostgreSQL and Redis keep fixed credentials, reachable only inside the stack.
    for name in ("postgres", "redis"):
        assert "ports" not in services[name], f"{name} must not be published on the host"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_every_airflow_container_reads_each_secret_from_the_config_volume(name, services):
    env = env_of(services[name])
    assert CONFIG in mounts(services[name])
    for option in SECRET_OPTIONS:
        assert option not in env, f"{name} sets {option} itself"
        assert env[f"{option}_CMD"] == f"cat {CONFIG}/{secret_file(option)}"


def secret_file(option: str) -> str:
    return {"AIRFLOW__API_AUTH__JWT_SECRET": "jwt_secret", "AIRFLOW__API__SECRET_KEY":
            "api_secret_key", "AIRFLOW__CORE__FERNET_KEY": "fernet_key"}[option]


# -- the airflow-init secrets step, run for real --------------------------------


def run_init(services: dict, config: Path, variables: dict[str, str]) -> str:
    """Run airflow-init's secrets step with ``config`` as its volume; its stdout."""
    script = argv(services["airflow-init"]["command"])[-1]
    (step,) = re.findall(r"^python - <<'PY'\n(.*?)^PY$", script, re.S | re.M)
    env = {key: interpolate(value, variables).replace(CONFIG, str(config))
           for key, value in env_of(services["airflow-init"]).items()}
    out = subprocess.run([sys.executable, "-c", interpolate(step, variables)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def kept(config: Path) -> dict[str, str]:
    """The files of the config volume, checked private (mode 600)."""
    files = {p.name: p for p in config.iterdir()}
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    return {name: path.read_text() for name, path in files.items()}


def test_first_start_makes_every_secret_and_prints_the_password_once(services, tmp_path):
    from cryptography.fernet import Fernet

    config = tmp_path / "config"
    config.mkdir()
    printed = run_init(services, config, {})
    first = kept(config)
    assert set(first) == {"jwt_secret", "api_secret_key", "fernet_key",
                          "simple_auth_manager_passwords.json"}
    password = json.loads(first["simple_auth_manager_passwords.json"])["admin"]
    assert len(password) >= 16 and printed.count(password) == 1, printed
    assert "'admin'" in printed and "AIRFLOW_ADMIN_PASSWORD" in printed
    assert len(first["jwt_secret"]) >= 64 and len(first["api_secret_key"]) >= 64
    assert first["jwt_secret"] != first["api_secret_key"]
    Fernet(first["fernet_key"])  # a valid key, or this raises

    assert run_init(services, config, {}) == "", "a second start must print nothing"
    assert kept(config) == first, "a second start must keep what the first made"

    other = tmp_path / "other"
    other.mkdir()
    run_init(services, other, {})
    assert all(kept(other)[name] != first[name] for name in first), "secrets must be random"


def test_the_old_default_password_is_replaced_at_the_next_start(services, tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "simple_auth_manager_passwords.json").write_text('{"admin": "admin"}\n')
    printed = run_init(services, config, {})
    password = json.loads(kept(config)["simple_auth_manager_passwords.json"])["admin"]
    assert password != "admin" and printed.count(password) == 1


def test_values_set_in_env_replace_the_kept_ones_and_are_not_printed(services, tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    run_init(services, config, {})
    chosen = {"AIRFLOW_ADMIN_USERNAME": "ops", "AIRFLOW_ADMIN_PASSWORD": "chosen-password",
              "AIRFLOW_JWT_SECRET": "j" * 64}
    assert run_init(services, config, chosen) == ""
    now = kept(config)
    assert json.loads(now["simple_auth_manager_passwords.json"])["ops"] == "chosen-password"
    assert now["jwt_secret"] == "j" * 64


def test_airflow_reads_the_kept_secrets_through_the_containers_settings(services, tmp_path):
    """Airflow's own configuration, given the containers' *_CMD settings, finds them."""
    config = tmp_path / "config"
    config.mkdir()
    run_init(services, config, {})
    env = {key: value.replace(CONFIG, str(config))
           for key, value in env_of(services["airflow-scheduler"]).items() if key.endswith("_CMD")}
    code = ("import json\nfrom airflow.configuration import conf\n"
            "from airflow.models.crypto import get_fernet\n"
            "assert get_fernet().decrypt(get_fernet().encrypt(b'x')) == b'x'\n"
            "print(json.dumps([conf.get('api_auth', 'jwt_secret'), conf.get('api', 'secret_key'),"
            " conf.get('core', 'fernet_key')]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**env, "AIRFLOW_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    files = kept(config)
    assert json.loads(out.stdout.splitlines()[-1]) == [
        files["jwt_secret"], files["api_secret_key"], files["fernet_key"]]
