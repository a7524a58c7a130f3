"""The persistent compilation cache: on by default, switchable, user settings win."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CODE = """
import os, sys, jax, jax.numpy as jnp
from factorflow.engine.runtime.cache import enable_compilation_cache
print(enable_compilation_cache())
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
"""


def _run(env_extra, tmp_path):
    import os

    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_extra}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def test_programs_are_written_to_the_cache(tmp_path):
    cache = tmp_path / "cache"
    assert _run({"FACTORFLOW_JAX_CACHE": str(cache)}, tmp_path) == str(cache)
    assert any(cache.iterdir()), "no compiled program was cached"


def test_off_disables_it(tmp_path):
    assert _run({"FACTORFLOW_JAX_CACHE": "off"}, tmp_path) == "None"


RUNTIME = """
import json
from factorflow.engine.runtime.cache import start_runtime
future = start_runtime()
try:
    devices, error = future.result(timeout=60), None
except RuntimeError as exc:
    devices, error = None, str(exc)
print(json.dumps({"devices": devices, "error": error}))
"""


def _start(platform: str) -> dict:
    """``start_runtime``'s result in a fresh process with ``JAX_PLATFORMS=platform``."""
    import json
    import os

    env = {**os.environ, "JAX_PLATFORMS": platform}
    out = subprocess.run([sys.executable, "-c", RUNTIME], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_runtime_starts_in_the_background():
    """``start_runtime`` creates JAX's client off the main thread and returns its platforms."""
    assert _start("cpu") == {"devices": ["cpu"], "error": None}


def test_an_absent_platform_fails_where_its_result_is_taken_with_a_message_naming_it():
    """Where CUDA is missing, the failure comes from ``result()``, naming the platform."""
    got = _start("cuda")
    if got["error"] is None:
        pytest.skip(f"CUDA is present here (devices {got['devices']}): no absent platform to test")
    assert got["devices"] is None
    assert "JAX could not start a backend (JAX_PLATFORMS=cuda)" in got["error"]
