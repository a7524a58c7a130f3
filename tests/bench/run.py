"""``make bench``: accuracy, speed, throughput and scale of factorflow against its peers.

Run from the repository root with the project venv (``make bench`` does this
after installing the peers into ``.bench/venv``)::

    .venv/bin/python -m tests.bench.run [--folds N] [--skip-scale] ...

Stages, each in child processes (see ``common.run_json``), each optional:

1. MovieLens 100K folds u1..u5: factorflow's CLI with default settings,
   Surprise SVD and Spark ALS (``movielens.py``, ``peers.py``), plus
   factorflow's time to equal each peer's RMSE;
2. throughput at rank 64 on 1M synthetic ratings: the engine vs a naive
   jitted step (``throughput.py``);
3. scale: 25M synthetic ratings, rank 64, 10 epochs, peak RSS of the fit
   (``synthetic.py``, ``scale.py``).

Prints the machine, package versions and one table; writes every raw number
(per fold, per epoch) to ``.bench/results.json``. Timings are figures, never
assertions: the machine may be shared, and its load is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.bench import fold_in, movielens, report, warm_start
from tests.bench.common import BENCH_DIR, GB, ROOT, java_version, machine, progress, run_json, versions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results.json")
    p.add_argument("--peer-python", default=str(BENCH_DIR / "venv" / "bin" / "python"),
                   help="interpreter of the peers' venv (Surprise, PySpark)")
    p.add_argument("--data-dir", type=Path, default=movielens.DEFAULT_DATA_DIR)
    p.add_argument("--folds", type=int, default=5, choices=range(1, 6), help="u1..uN")
    p.add_argument("--methods", nargs="+", default=list(movielens.METHODS),
                   choices=movielens.METHODS)
    p.add_argument("--timeout", type=float, default=900, help="seconds per fold / per stage")
    p.add_argument("--skip-movielens", action="store_true")
    p.add_argument("--skip-daily", action="store_true",
                   help="skip the warm-start and fold-in rows (MovieLens 100K)")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-scale", action="store_true", help="skip the 25M-rating fit (long)")
    p.add_argument("--rank", type=int, default=64, help="rank of the synthetic stages")
    p.add_argument("--throughput-ratings", type=int, default=1_000_000)
    p.add_argument("--throughput-users", type=int, default=20_000)
    p.add_argument("--throughput-items", type=int, default=8_000)
    p.add_argument("--throughput-epochs", type=int, default=10)
    p.add_argument("--scale-ratings", type=int, default=25_000_000)
    p.add_argument("--scale-users", type=int, default=162_000)
    p.add_argument("--scale-items", type=int, default=59_000)
    p.add_argument("--scale-epochs", type=int, default=10)
    p.add_argument("--scale-timeout", type=float, default=2400)
    p.add_argument("--scale-max-rss-gb", type=float, default=12.0,
                   help="kill the scale fit past this RSS (a shared machine must survive it)")
    return p.parse_args(argv)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 2 in a child process."""
    run = run_json([sys.executable, "-m", "tests.bench.throughput",
                    "--ratings", str(args.throughput_ratings), "--users", str(args.throughput_users),
                    "--items", str(args.throughput_items), "--rank", str(args.rank),
                    "--epochs", str(args.throughput_epochs)],
                   log=BENCH_DIR / "logs" / "throughput.log", timeout=args.timeout)
    if run["error"]:
        return {"error": run["error"]}
    return {**run["result"], "process_peak_rss_bytes": run["peak_rss_bytes"]}


def scale(args: argparse.Namespace) -> dict[str, Any]:
    """Stage 3: generate (cached under .bench/data), then fit in a child of its own."""
    name = (f"synthetic-{args.scale_ratings}-{args.scale_users}x{args.scale_items}-seed0.npz")
    data = BENCH_DIR / "data" / name
    info: dict[str, Any] = {"data": str(data.relative_to(ROOT)), "rank": args.rank}
    if not data.exists():
        progress(f"generating {args.scale_ratings:,} synthetic ratings -> {data}")
        gen = run_json([sys.executable, "-m", "tests.bench.synthetic", "--out", str(data),
                        "--ratings", str(args.scale_ratings), "--users", str(args.scale_users),
                        "--items", str(args.scale_items)],
                       log=BENCH_DIR / "logs" / "synthetic.log", timeout=args.scale_timeout)
        if gen["error"]:
            return {**info, "error": f"generation failed: {gen['error']}"}
        info["generation"] = gen["result"]
    progress(f"scale fit: rank {args.rank}, {args.scale_epochs} epochs on {data.name}")
    run = run_json([sys.executable, "-m", "tests.bench.scale", "--data", str(data),
                    "--rank", str(args.rank), "--epochs", str(args.scale_epochs)],
                   log=BENCH_DIR / "logs" / "scale.log", timeout=args.scale_timeout,
                   max_rss_bytes=args.scale_max_rss_gb * GB)
    result = run["result"] or {}
    return {**info, **result, "peak_rss_bytes": run["peak_rss_bytes"],
            "self_reported_peak_rss_bytes": result.get("peak_rss_bytes"),
            "wall_seconds": run["wall_seconds"], "error": run["error"] or result.get("error")}


def peer_versions(ml: dict[str, Any]) -> dict[str, str | None]:
    """Peer library versions as the peers' venv reported them."""
    found: dict[str, str | None] = {}
    for record in ml.get("methods", {}).values():
        for name, version in (record.get("versions") or {}).items():
            found.setdefault(f"{name} (peers)" if name in ("numpy", "scipy") else name, version)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "argv": sys.argv[1:] if argv is None else argv,
        "versions": {**versions("factorflow", "jax", "jaxlib", "optax", "numpy"),
                     "java": java_version()},
    }
    progress(report.header(results))
    if not args.skip_movielens:
        methods = tuple(args.methods)
        if not Path(args.peer_python).exists() and set(methods) - {"factorflow"}:
            progress(f"no peer interpreter at {args.peer_python}: run `make bench` to install it")
        results["movielens"] = movielens.run(args.data_dir, args.folds, args.peer_python,
                                             timeout=args.timeout, methods=methods)
        if "skipped" in results["movielens"]:
            print(f"MovieLens: skipped: {results['movielens']['skipped']}")
        results["versions"].update(peer_versions(results["movielens"]))
    if not args.skip_daily:
        progress("warm start: cold vs warm fits on the MovieLens 100K folds")
        results["warm_start"] = warm_start.run(args.data_dir, args.folds)
        progress("fold-in: held-out users folded in vs a retrain")
        results["fold_in"] = fold_in.run(args.data_dir)
    results["throughput"] = {"skipped": "--skip-throughput"} if args.skip_throughput \
        else throughput(args)
    results["scale"] = {"skipped": "--skip-scale"} if args.skip_scale else scale(args)
    results["seconds"] = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print()
    print(report.header(results))
    print(report.table(results))
    print(f"\nraw numbers (per fold, per epoch): {args.out}; logs: .bench/logs/; "
          f"bench took {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
