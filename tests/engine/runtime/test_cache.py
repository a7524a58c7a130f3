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


@pytest.mark.parametrize("platform", ["cpu", "cuda"])
def test_the_runtime_starts_in_the_background_and_a_failure_is_met_by_its_user(platform):
    """``start_runtime`` creates JAX's client off the main thread; a platform that is
    absent (no CUDA here) fails where its result is taken, with a message naming it."""
    import json
    import os

    env = {**os.environ, "JAX_PLATFORMS": platform}
    out = subprocess.run([sys.executable, "-c", RUNTIME], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if platform == "cpu":
        assert got["devices"] == ["cpu"] and got["error"] is None
    else:
        assert got["devices"] is None
        assert "JAX could not start a backend (JAX_PLATFORMS=cuda)" in got["error"]
