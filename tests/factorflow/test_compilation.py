"""The persistent compilation cache: on by default, switchable, user settings win."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

CODE = """
import os, sys, jax, jax.numpy as jnp
from factorflow.compilation import enable_compilation_cache
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
