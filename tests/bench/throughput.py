"""Training throughput at rank 64 on synthetic ratings: factorflow's engine vs a naive JAX step.

Runs in the project venv as a child process and prints one JSON object::

    python -m tests.bench.throughput --ratings 1000000 --rank 64 --epochs 10

factorflow: ``factorflow.engine.fit`` with default settings except rank and epochs; its
rate is the median of the history's ``ratings_per_s`` over the epochs after
the first (which compiles). The peer, written here, is the straightforward
full-batch program: gather ``P[u]``, ``Q[i]``, mean squared error plus L2 on
the gathered rows, ``jax.jit(jax.value_and_grad)`` and a plain SGD update in
the same jitted step (the gradient of a gather is a scatter-add); its rate is
the median step over the steps after the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from tests.bench.common import progress, self_peak_rss_bytes


def synthetic_triplets(n_users: int, n_items: int, n_ratings: int, seed: int):
    """``(Triplets, n_users, n_items)`` from ``factorflow.warehouse.demo.generate_ratings``."""
    from factorflow.warehouse.demo import generate_ratings
    from factorflow.engine.triplets import Triplets

    data = generate_ratings(n_users=n_users, n_items=n_items, n_ratings=n_ratings, seed=seed)
    users = (data["user_id"] - 1001).astype(np.int32)  # generate_ratings offsets its ids
    items = (data["item_id"] - 50001).astype(np.int32)
    return Triplets(users, items, data["rating"].astype(np.float32)), n_users, n_items


def factorflow_rate(train, n_users: int, n_items: int, rank: int, epochs: int) -> dict[str, Any]:
    """Engine throughput: per-epoch ratings/s from ``factorflow.engine.fit``'s history."""
    from factorflow.engine import TrainConfig, fit

    # The gradient engine (the naive peer is a gradient step too): full-batch Adam, COO.
    config = TrainConfig(rank=rank, epochs=epochs, optimizer="adam", representation="sparse")
    result = fit(train, n_users=n_users, n_items=n_items, config=config,
                          log=progress)
    rates = [h["ratings_per_s"] for h in result.history]
    ends = [0.0] + [h["seconds"] for h in result.history]
    return {"ratings_per_second": statistics.median(rates[1:] or rates),
            "epoch_seconds": float(statistics.median(np.diff(ends)[1:] if len(ends) > 2 else np.diff(ends))),
            "first_epoch_seconds": result.history[0]["seconds"],
            "per_epoch_ratings_per_second": rates, "fit_seconds": result.seconds,
            "final_train_loss": result.history[-1]["train_loss"],
            "config": config._asdict()}


def naive_step(reg: float, lr: float):
    """The plain jitted full-batch step: ``(P, Q), u, i, r, mean -> ((P, Q), loss)``."""
    import jax
    import jax.numpy as jnp

    def loss(params, users, items, ratings, mean):
        p, q = params
        pu, qi = p[users], q[items]
        err = mean + jnp.sum(pu * qi, axis=-1) - ratings
        penalty = jnp.mean(jnp.sum(pu * pu, axis=-1) + jnp.sum(qi * qi, axis=-1))
        return jnp.mean(err * err) + reg * penalty

    @jax.jit
    def step(params, users, items, ratings, mean):
        value, grads = jax.value_and_grad(loss)(params, users, items, ratings, mean)
        return jax.tree.map(lambda x, g: x - lr * g, params, grads), value

    return step


def naive_rate(train, n_users: int, n_items: int, rank: int, steps: int,
               reg: float = 0.05, lr: float = 0.05) -> dict[str, Any]:
    """Peer throughput: ``steps`` full-batch steps, each timed to completion."""
    import jax
    import jax.numpy as jnp

    key_p, key_q = jax.random.split(jax.random.key(0))
    params = (0.1 * jax.random.normal(key_p, (n_users, rank), jnp.float32),
              0.1 * jax.random.normal(key_q, (n_items, rank), jnp.float32))
    users, items, ratings = (jnp.asarray(a) for a in train)
    mean = jnp.float32(np.mean(train.ratings))
    step = naive_step(reg, lr)
    seconds, losses = [], []
    for k in range(steps):
        t0 = time.perf_counter()
        params, value = step(params, users, items, ratings, mean)
        jax.block_until_ready((params, value))
        seconds.append(time.perf_counter() - t0)
        losses.append(float(value))
        progress(f"naive step {k + 1}/{steps}: loss {losses[-1]:.4f}, {seconds[-1]:.3f} s")
    n = len(train)
    steady = seconds[1:] or seconds
    return {"ratings_per_second": n / statistics.median(steady),
            "epoch_seconds": statistics.median(steady), "first_epoch_seconds": seconds[0],
            "per_epoch_ratings_per_second": [n / s for s in seconds],
            "losses": losses, "reg": reg, "lr": lr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=8_000)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax

    t0 = time.perf_counter()
    train, n_users, n_items = synthetic_triplets(args.users, args.items, args.ratings, args.seed)
    progress(f"generated {len(train):,} ratings in {time.perf_counter() - t0:.1f} s")
    out: dict[str, Any] = {"n_ratings": len(train), "n_users": n_users, "n_items": n_items,
                           "rank": args.rank, "epochs": args.epochs,
                           "devices": [str(d) for d in jax.devices()]}
    for name, measure in (("factorflow", factorflow_rate), ("naive_jax", naive_rate)):
        try:
            out[name] = measure(train, n_users, n_items, args.rank, args.epochs)
        except Exception as exc:  # report the engine's failure as the figure
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            progress(f"{name} failed: {out[name]['error']}")
    ff, naive = out["factorflow"], out["naive_jax"]
    if "error" not in ff and "error" not in naive:
        out["ratio"] = ff["ratings_per_second"] / naive["ratings_per_second"]
    out["peak_rss_bytes"] = self_peak_rss_bytes()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
