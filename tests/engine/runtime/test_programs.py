"""Compiled programs kept whole: a new process fits without tracing, same results.

Each run is a fresh Python process (what a DAG task or ``factorflow fit`` is),
with its own JAX compilation cache under ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from factorflow.engine.runtime import programs
from factorflow.engine.losses import squared_error

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]  # the repository root

CHILD = """
import hashlib, json, numpy as np
from factorflow.engine.runtime.cache import enable_compilation_cache
from factorflow.engine.gibbs.kernels import TRACES
from factorflow.engine.gibbs.sampler import GibbsConfig, fit_gibbs
from tests.helpers import synthetic
print(json.dumps({"cache": enable_compilation_cache()}))
train, valid = synthetic(n_users=70, n_items=50, n=1500)
result = fit_gibbs(train, n_users=70, n_items=50, valid=valid,
                   config=GibbsConfig(rank=3, sweeps=6, burn_in=1, max_samples=3, seed=4))
digest = hashlib.sha256(b"".join(np.asarray(p).tobytes() for p in result.params)).hexdigest()
print(json.dumps({"traces": dict(TRACES), "params": digest,
                  "valid_rmse": result.history[-1]["valid_rmse"]}))
"""


def _fit(cache) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "FACTORFLOW_JAX_CACHE": str(cache)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    return {**lines[0], **lines[-1], "log": out.stderr}


def _stored(cache: Path) -> list[Path]:
    return sorted((cache / programs.SUBDIR).glob("*.bin"))


def test_a_second_process_loads_the_programs_without_tracing(tmp_path):
    cache = tmp_path / "cache"
    first = _fit(cache)
    assert first["traces"].get("half_step", 0) >= 1 and first["traces"].get("score") == 1
    assert len(_stored(cache)) == 2, "half_step (one shape for both sides here) and score"
    second = _fit(cache)
    assert second["traces"] == {}, "a stored program was traced again"
    assert second["params"] == first["params"]
    assert second["valid_rmse"] == first["valid_rmse"]


def test_a_damaged_program_is_compiled_again(tmp_path):
    cache = tmp_path / "cache"
    first = _fit(cache)
    for path in _stored(cache):
        path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk
    second = _fit(cache)
    assert second["traces"].get("half_step", 0) >= 1
    assert second["params"] == first["params"]
    third = _fit(cache)  # the rewritten files load
    assert third["traces"] == {} and third["params"] == first["params"]


def test_a_lost_store_is_rebuilt_from_fresh_compiles_not_from_jaxs_cache(tmp_path):
    """JAX's copy of a program it loaded from its own cache lacks the kernels.

    Removing the store (not JAX's cache) makes the next process's compile a
    JAX cache hit; storing that copy would make the process after it fail
    with "Function ... not found". The store compiles afresh instead.
    """
    cache = tmp_path / "cache"
    first = _fit(cache)
    names = [p.name for p in _stored(cache)]
    for path in _stored(cache):
        path.unlink()
    second = _fit(cache)
    assert second["params"] == first["params"]
    assert [p.name for p in _stored(cache)] == names
    third = _fit(cache)
    assert third["traces"] == {} and third["params"] == first["params"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _refusals(result: dict) -> list[str]:
    """The store's warnings in a child's log (Python's default handler writes them to stderr)."""
    return [line for line in result["log"].splitlines()
            if "not loading compiled programs from" in line]


def _loosen_store(store: Path) -> list[str]:
    store.chmod(0o777)
    return [f"{store}: mode 777: writable by group and others; whoever can write it can run "
            f"code as this process, so programs are compiled instead. To use the store, make "
            f"it private (chmod 700 {store})"]


def _loosen_entries(store: Path) -> list[str]:
    entries = sorted(store.glob("*.bin"))
    for entry in entries:  # every one loose: still a single warning, naming the first met
        entry.chmod(0o620)
    return [f"{entry}: mode 620: writable by group; whoever can write it can run code as this "
            f"process, so programs are compiled instead. To use the store, make it private "
            f"(chmod 600 {entry})" for entry in entries]


def _give_store_to_nobody(store: Path) -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("giving the store to another user needs root; these tests run as "
                    f"uid {os.geteuid()}")
    nobody = pwd.getpwnam("nobody")
    for path in (store, *store.iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    me = pwd.getpwuid(os.geteuid()).pw_name
    return [f"{store}: owned by nobody, not by {me} who runs this process; whoever can write "
            f"it can run code as this process, so programs are compiled instead. To use the "
            f"store, make it private (chown -R {me} {store})"]


def test_a_new_store_is_private_to_its_user(tmp_path):
    cache = tmp_path / "cache"
    _fit(cache)
    assert _mode(cache / programs.SUBDIR) == 0o700
    assert [oct(_mode(p)) for p in _stored(cache)] == ["0o600", "0o600"]


@pytest.mark.parametrize("loosen", [_loosen_store, _loosen_entries, _give_store_to_nobody],
                         ids=["group-and-other-writable store", "group-writable entries",
                              "store owned by nobody"])
def test_a_store_others_could_write_is_not_loaded(tmp_path, loosen):
    """Stored programs are machine code loaded with pickle: refused, like a loose ssh key."""
    cache = tmp_path / "cache"
    store = cache / programs.SUBDIR
    first = _fit(cache)
    assert _refusals(first) == []
    expected = loosen(store)  # each warning it may log (one per entry when entries are loose)
    second = _fit(cache)
    assert second["traces"].get("half_step", 0) >= 1 and second["traces"].get("score") == 1, \
        "a stored program was loaded from a store others could write"
    assert second["params"] == first["params"]
    (refusal,) = _refusals(second)  # two programs refused, one warning
    assert any(f"not loading compiled programs from {why}" in refusal for why in expected), \
        (refusal, expected)


def test_nothing_is_stored_with_the_cache_off(tmp_path):
    result = _fit("off")
    assert result["cache"] is None
    assert result["traces"].get("half_step", 0) >= 1


def test_only_factorflows_own_static_values_have_a_stable_name():
    assert programs._stable(squared_error) == "factorflow.engine.losses.squared_error"
    assert programs._stable(lambda p, t: p) is None     # a user's function: this process only
    assert programs._stable(3) == "3"
    assert programs._stable(object()) is None           # its repr holds an address


def test_keys_change_with_shapes_dtypes_and_static_values():
    import numpy as np

    a = (np.zeros((3, 2), np.float32), np.int32(1))
    key = programs.program_key("p", a, {"rank": 2})
    assert key == programs.program_key("p", (np.ones((3, 2), np.float32), np.int32(7)),
                                       {"rank": 2})
    assert key != programs.program_key("p", (np.zeros((4, 2), np.float32), np.int32(1)),
                                       {"rank": 2})
    assert key != programs.program_key("p", (np.zeros((3, 2), np.float64), np.int32(1)),
                                       {"rank": 2})
    assert key != programs.program_key("p", a, {"rank": 3})
    assert key != programs.program_key("q", a, {"rank": 2})


def test_a_users_function_is_kept_for_the_process_and_never_mistaken_for_another():
    """Unstable static values (a user's loss) key by address; the entry keeps them alive."""
    from functools import partial

    import jax
    import numpy as np

    @partial(jax.jit, static_argnames="fn")
    def apply(x, *, fn):
        return fn(x)

    x = np.arange(3, dtype=np.float32)
    for scale in (2.0, 3.0, 5.0):  # each lambda freed after its turn: its address may recur
        out = programs.load(apply, (x,), name="test.apply", static={"fn": lambda v: v * scale})
        np.testing.assert_array_equal(np.asarray(out(x)), x * scale)


BIND = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from factorflow.engine.runtime import programs
programs.bind_lapack()
package_skipped = "scipy.linalg" not in sys.modules
# A program using LAPACK, compiled elsewhere and loaded here (so never lowered here).
blob = sys.stdin.buffer.read()
import pickle
from jax.experimental.serialize_executable import deserialize_and_load
chol = deserialize_and_load(*pickle.loads(blob))
a = np.array([[4.0, 2.0], [2.0, 5.0]], np.float32)
got = np.asarray(chol(a)).tolist()
import scipy.linalg  # the usual import still binds its modules
print(json.dumps({"package_skipped": package_skipped, "chol": got,
                  "scipy": scipy.linalg.cholesky(a.astype(np.float64), lower=True).tolist(),
                  "bound": scipy.linalg.cython_lapack.__name__}))
"""


def test_lapack_is_bound_without_importing_scipy_linalg_and_a_loaded_program_runs():
    import pickle

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental.serialize_executable import serialize

    def cholesky(a):
        return jnp.linalg.cholesky(a)

    # A name of its own: a program JAX's persistent cache returns serializes
    # without its kernels (see programs._compile), so it must compile here.
    cholesky.__name__ = f"cholesky_{os.urandom(6).hex()}"
    compiled = jax.jit(cholesky).lower(np.eye(2, dtype=np.float32)).compile()
    assert "lapack" in compiled.as_text()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", BIND], input=pickle.dumps(serialize(compiled)),
                         env=env, cwd=ROOT, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    result = json.loads(out.stdout.decode().splitlines()[-1])
    assert result["package_skipped"], "scipy.linalg's package __init__ ran (the slow import)"
    want = [[2.0, 0.0], [1.0, 2.0]]
    np.testing.assert_allclose(result["chol"], want, rtol=1e-6)
    np.testing.assert_allclose(result["scipy"], want, rtol=1e-12)
    assert result["bound"] == "scipy.linalg.cython_lapack"
