"""Scale: factorflow's engine on the large synthetic set (see ``synthetic.py``), one fit per process.

Runs as a child process, so that the parent's ``os.wait4`` gives the peak RSS
of this fit alone (loading the cached ``.npz`` and JAX's runtime included,
generation not)::

    python -m tests.bench.scale --data .bench/data/synthetic.npz --rank 64 --epochs 10

Prints one JSON object: per-epoch seconds and ratings/s, the RSS before the
fit and this process's own peak (VmHWM), or the engine's error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from tests.bench.common import progress, self_peak_rss_bytes


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    from factorflow.engine import TrainConfig, fit
    from factorflow.engine.triplets import Triplets

    with np.load(args.data) as data:
        train = Triplets(data["users"], data["items"], data["ratings"])
        n_users, n_items = (int(x) for x in data["shape"])
    out = {"n_ratings": len(train), "n_users": n_users, "n_items": n_items, "rank": args.rank,
           "epochs": args.epochs, "rss_before_fit_bytes": _rss_now()}
    config = TrainConfig(rank=args.rank, epochs=args.epochs, optimizer="adam",
                                  representation="sparse")
    started = time.perf_counter()
    try:
        result = fit(train, n_users=n_users, n_items=n_items, config=config, log=progress)
    except Exception as exc:  # the failure is the figure
        out["error"] = f"{type(exc).__name__}: {exc}"
    else:
        ends = [0.0] + [h["seconds"] for h in result.history]
        epoch_seconds = np.diff(ends).tolist()
        out.update(
            fit_seconds=result.seconds, epochs_run=len(result.history),
            epoch_seconds=epoch_seconds, first_epoch_seconds=epoch_seconds[0],
            median_epoch_seconds=statistics.median(epoch_seconds[1:] or epoch_seconds),
            ratings_per_second=statistics.median(
                [h["ratings_per_s"] for h in result.history][1:]
                or [result.history[0]["ratings_per_s"]]),
            final_train_loss=result.history[-1]["train_loss"], config=config._asdict())
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_bytes"] = self_peak_rss_bytes()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
