"""The ``factorflow fold-in`` subcommand: its arguments and handler, cheap to import.

The work is in :mod:`factorflow.cli.fold_in_files`, imported when the command
runs: building the parser must not start JAX for every other command.
"""

from __future__ import annotations

import argparse
import json
import sys


def run_fold_in(args: argparse.Namespace) -> int:
    """The ``fold-in`` subcommand's handler: one JSON object with ``--json``, else a summary."""
    from factorflow.cli.fold_in_files import fold_in_files

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = fold_in_files(args.model, args.ratings, test_path=args.test,
                               format=args.format, out=args.out, log=progress)
    except OSError as exc:  # unreadable path, a directory given, disk full on --out
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(str(exc)) from exc
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    print(f"folded in {result['n_users_folded']:,} users and {result['n_items_folded']:,} "
          f"items from {result['n_ratings']:,} ratings ({result['n_ignored']:,} ignored) in "
          f"{result['fold_in_seconds']:.2f} s: now {result['n_users']:,} users x "
          f"{result['n_items']:,} items")
    if result["rmse"] is not None:
        print(f"  test RMSE   {result['rmse']:.4f}  MAE {result['mae']:.4f}  "
              f"({result['n_test']:,} ratings)")
    if result["out"]:
        print(f"extended model and id maps written to {result['out']}")
    return 0


def add_fold_in_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``factorflow fold-in`` on the command's subparsers."""
    from factorflow.cli.readers import FORMATS  # imports Polars lazily: cheap here

    fold = sub.add_parser("fold-in", help="add new users and items to a model from their ratings")
    fold.add_argument("--model", required=True, metavar="MODEL_DIR",
                      help="directory written by `factorflow fit --out`")
    fold.add_argument("--ratings", required=True,
                      help="ratings of new users and items (unknown ids become new rows)")
    fold.add_argument("--test", default=None, help="test ratings file to score")
    fold.add_argument("--format", default="auto", choices=FORMATS,
                      help="file format of --ratings and --test (default: detect each)")
    fold.add_argument("--out", default=None, help="directory for the extended model")
    fold.add_argument("--json", action="store_true",
                      help="print one JSON object on stdout (progress stays on stderr)")
    fold.set_defaults(func=run_fold_in)
