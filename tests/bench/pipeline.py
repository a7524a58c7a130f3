"""``make bench-pipeline``: the whole factorize_ratings DAG at 1M, 10M, 25M (and 100M) ratings.

For each size: a synthetic DuckDB warehouse from ``factorflow demo-data``
(cached under ``.bench/data/``; each run gets a fresh copy), then the real DAG
through ``airflow dags test factorize_ratings -c '{"warehouse": ...}'`` in a
child process with its own Airflow home and SQLite metadata DB (migrated once),
artifacts folder and data roots under ``.bench/pipeline/``. The child's whole
process tree is sampled every ``--sample`` seconds (psutil) for its peak RSS.

Per task, wall seconds and peak RSS come from the task's own log line
(``<stage> done in S s, peak RSS M MB`` or ``<stage> failed after ...``, see
``factorflow.airflow.operators._StageOperator``), so a run that fails part-way
still reports every stage it reached; the model's ``fit_seconds`` comes from
``model_runs``. Prints one table, writes every figure to ``.bench/pipeline.json``
and each run's log to ``.bench/logs/pipeline-<size>.log``::

    python -m tests.bench.pipeline [--sizes 1M 10M 25M] [--huge] [--conf '{"rank": 64}']
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.bench.common import BENCH_DIR, GB, ROOT, machine, progress, versions

#: size -> (users, items, ratings). 1M: MovieLens-1M's shape; 10M: MovieLens-10M's
#: (rounded); 25M: MovieLens-25M's; 100M: Netflix-prize-like.
SHAPES = {"1M": (6_040, 3_706, 1_000_000), "10M": (70_000, 10_000, 10_000_000),
          "25M": (162_000, 59_000, 25_000_000), "100M": (500_000, 100_000, 100_000_000)}
TASKS = ("extract", "validate", "build", "train", "publish")
TASK_LINE = re.compile(r"\b(?P<task>%s) (?P<outcome>done in|failed after) (?P<seconds>[\d.]+) s, "
                       r"peak RSS (?P<peak>[\d,.]+) MB" % "|".join(TASKS))
WORK = BENCH_DIR / "pipeline"
BIN = Path(sys.executable).parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["1M", "10M", "25M"],
                   choices=[s for s in SHAPES if s != "100M"])
    p.add_argument("--huge", action="store_true", help="add 100M ratings (500,000 x 100,000)")
    p.add_argument("--conf", type=json.loads, default={},
                   help="extra DAG params as JSON, e.g. '{\"rank\": 64, \"epochs\": 20}'")
    p.add_argument("--sample", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per DAG run")
    p.add_argument("--max-rss-gb", type=float, default=None,
                   help="kill a run whose process tree grows past this (default: 90%% of RAM)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "pipeline.json")
    return p.parse_args(argv)


def airflow_env(warehouse: Path) -> dict[str, str]:
    """The child's environment: its own Airflow home and DB, the run's data under .bench/."""
    home = WORK / "airflow"
    env = {**os.environ,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "FACTORFLOW_WAREHOUSE": str(warehouse),
           "FACTORFLOW_ARTIFACTS_DIR": str(WORK / "artifacts"),
           "FACTORFLOW_DATA_ROOTS": str(WORK),
           "GX_ANALYTICS_ENABLED": "false"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def migrate_airflow_db(env: dict[str, str]) -> None:
    """``airflow db migrate`` into the bench's own home, once."""
    home = Path(env["AIRFLOW_HOME"])
    if (home / "airflow.db").exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    progress(f"migrating the bench's Airflow metadata DB in {home}")
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


def source_warehouse(size: str) -> tuple[Path, float | None]:
    """The cached warehouse of ``size`` (generated on first use) and the seconds generating took."""
    users, items, ratings = SHAPES[size]
    path = BENCH_DIR / "data" / f"pipeline-{ratings}-{users}x{items}.duckdb"
    if path.exists():
        return path, None
    progress(f"generating {ratings:,} ratings ({users:,} users x {items:,} items) into {path}")
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    subprocess.run([str(BIN / "factorflow"), "demo-data", "--users", str(users), "--items",
                    str(items), "--ratings", str(ratings), "--warehouse", str(partial)],
                   check=True, stdout=subprocess.DEVNULL)
    partial.rename(path)
    return path, time.perf_counter() - started


def run_sampled(cmd: list[str], *, env: dict[str, str], log: Path, timeout: float,
                interval: float, max_rss_bytes: float) -> dict[str, Any]:
    """Run ``cmd``, sampling its whole process tree's RSS every ``interval`` seconds.

    Returns:
        ``{"wall_seconds", "tree_peak_rss_mb", "returncode", "error"}``; the
        child's stdout and stderr go to ``log``.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    peak, error = 0, None
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(_rss(p) for p in tree))
            except psutil.NoSuchProcess:
                pass
            if time.perf_counter() - started > timeout:
                error = f"timed out after {timeout:.0f} s"
            elif peak > max_rss_bytes:
                error = f"killed: process tree RSS above the {max_rss_bytes / GB:.1f} GB cap"
            if error:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(interval)
    wall = time.perf_counter() - started
    if error is None and proc.returncode == -signal.SIGKILL:
        error = "killed by signal 9 (out of memory?)"
    elif error is None and proc.returncode:
        error = f"exit code {proc.returncode}"
    return {"wall_seconds": round(wall, 2), "tree_peak_rss_mb": round(peak / 1e6, 1),
            "returncode": proc.returncode, "error": error}


def _rss(process: Any) -> int:
    import psutil

    try:
        return process.memory_info().rss
    except psutil.Error:  # ended between the listing and the read
        return 0


def task_figures(log_text: str) -> dict[str, dict[str, Any]]:
    """task -> ``{"seconds", "peak_rss_mb", "outcome"}`` from the tasks' log lines.

    A retried task logs once per try; the last try's line wins.
    """
    found = {}
    for m in TASK_LINE.finditer(log_text):
        found[m["task"]] = {"seconds": float(m["seconds"]),
                            "peak_rss_mb": float(m["peak"].replace(",", "")),
                            "outcome": "done" if m["outcome"] == "done in" else "failed"}
    return {t: found[t] for t in TASKS if t in found}


def published_run(warehouse: Path) -> dict[str, Any] | None:
    """The newest ``model_runs`` row of the warehouse (None when nothing was published)."""
    import duckdb

    try:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            cur = con.execute("SELECT n_users, n_items, n_ratings, rank, optimizer, epochs_run, "
                              "valid_rmse, fit_seconds FROM factorflow.model_runs "
                              "ORDER BY created_at DESC LIMIT 1")
            row = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], row)) if row else None
    except duckdb.Error:
        return None


def bench_size(size: str, args: argparse.Namespace, max_rss_bytes: float) -> dict[str, Any]:
    """Generate (or reuse) the warehouse of ``size``, run the DAG on a fresh copy, collect."""
    users, items, ratings = SHAPES[size]
    source, generate_seconds = source_warehouse(size)
    warehouse = WORK / size / "warehouse.duckdb"
    shutil.rmtree(warehouse.parent, ignore_errors=True)
    warehouse.parent.mkdir(parents=True)
    shutil.copy(source, warehouse)
    env = airflow_env(warehouse)
    migrate_airflow_db(env)
    conf = json.dumps({"warehouse": str(warehouse), **args.conf})
    log = BENCH_DIR / "logs" / f"pipeline-{size}.log"
    progress(f"{size}: airflow dags test factorize_ratings (log: {log})")
    run = run_sampled([str(BIN / "airflow"), "dags", "test", "factorize_ratings", "-c", conf],
                      env=env, log=log, timeout=args.timeout, interval=args.sample,
                      max_rss_bytes=max_rss_bytes)
    model = published_run(warehouse)
    fit = model["fit_seconds"] if model else None
    if run["error"] is None and model is None:
        run["error"] = "the run published no model: see the log"
    return {"size": size, "users": users, "items": items, "ratings": ratings,
            "generate_seconds": generate_seconds, "conf": args.conf, **run,
            "tasks": task_figures(log.read_text(errors="replace")), "model": model,
            "fit_seconds": fit,
            "run_over_fit": round(run["wall_seconds"] / fit, 2) if fit else None,
            "log": str(log)}


def table(results: list[dict[str, Any]]) -> str:
    """One block per size: each task's wall and peak RSS, then the run's."""
    lines = [f"{'size':<6}{'task':<10}{'wall s':>10}{'peak RSS MB':>14}"]
    for r in results:
        lines.append("-" * 40)
        for task, f in r["tasks"].items():
            mark = "" if f["outcome"] == "done" else "  FAILED"
            lines.append(f"{r['size']:<6}{task:<10}{f['seconds']:>10.1f}{f['peak_rss_mb']:>14,.0f}"
                         f"{mark}")
        fit = f"{r['fit_seconds']:.1f}" if r["fit_seconds"] else "-"
        ratio = f"{r['run_over_fit']:.2f}" if r["run_over_fit"] else "-"
        lines.append(f"{r['size']:<6}{'run':<10}{r['wall_seconds']:>10.1f}"
                     f"{r['tree_peak_rss_mb']:>14,.0f}   fit s {fit}, run/fit {ratio}")
        if r["generate_seconds"]:
            lines.append(f"{r['size']:<6}(warehouse generated in {r['generate_seconds']:.1f} s)")
        if r["error"]:
            lines.append(f"{r['size']:<6}error: {r['error']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from factorflow.stages.resources import memory_limit_bytes

    args = parse_args(argv)
    sizes = args.sizes + (["100M"] if args.huge else [])
    max_rss = args.max_rss_gb * GB if args.max_rss_gb else 0.9 * memory_limit_bytes()
    host = machine()
    print(f"machine: {host['nproc']} CPUs ({host['cpu_model']}), "
          f"{(host['mem_total_bytes'] or 0) / GB:.1f} GB RAM, load {host['loadavg']}")
    print(f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', 'cpu')}; "
          f"conf {args.conf or 'defaults'}; run killed past {max_rss / GB:.1f} GB")
    record = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": host, "versions": versions("apache-airflow", "jax", "duckdb", "polars"),
              "runs": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in sizes:  # written after each size: a later size's crash keeps the earlier figures
        record["runs"].append(bench_size(size, args, max_rss))
        args.out.write_text(json.dumps(record, indent=2, default=str))
    results = record["runs"]
    print(table(results))
    print(f"results: {args.out}")
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
