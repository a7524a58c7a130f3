"""``factorflow`` command line: demo data and a look at what was published."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _demo_data(args: argparse.Namespace) -> int:
    from factorflow.demo import write_demo_warehouse

    summary = write_demo_warehouse(args.warehouse, table=args.table, seed=args.seed,
                                   n_users=args.users, n_items=args.items,
                                   n_ratings=args.ratings)
    print(f"demo warehouse {summary['warehouse']}: {summary['table']} holds "
          f"{summary['n_ratings']:,} ratings")
    return 0


def _show(args: argparse.Namespace) -> int:
    from factorflow.warehouse import latest_result

    result = latest_result(args.warehouse, schema=args.schema, user_id=args.user,
                           top_n=args.top)
    if args.json:
        print(json.dumps(result, default=str, indent=2))
        return 0
    m = result["model"]
    print(f"\nlatest model {m['model_id']} (rank {m['rank']}, {m['epochs_run']} epochs, "
          f"fit {m['fit_seconds']:.1f} s, published {m['created_at']:%Y-%m-%d %H:%M:%S})")
    print(f"  validation RMSE  {m['valid_rmse']:.4f}")
    print(f"  bias-only RMSE   {m['baseline_valid_rmse']:.4f}  "
          f"({100 * (1 - m['valid_rmse'] / m['baseline_valid_rmse']):.1f}% lower with factors)")
    print(f"\ntop {args.top} recommendations for user {result['user_id']}:")
    print("  rank  item_id   score")
    for r in result["recommendations"]:
        print(f"  {r['rank']:>4}  {r['item_id']!s:>7}  {r['score']:.3f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``factorflow`` command."""
    parser = argparse.ArgumentParser(prog="factorflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write the deterministic demo ratings table")
    demo.add_argument("--warehouse", required=True, help="DuckDB file to create or update")
    demo.add_argument("--table", default="raw.ratings")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--users", type=int, default=3000)
    demo.add_argument("--items", type=int, default=2000)
    demo.add_argument("--ratings", type=int, default=200_000)
    demo.set_defaults(func=_demo_data)

    show = sub.add_parser("show", help="latest published model and one user's top items")
    show.add_argument("--warehouse", required=True, help="DuckDB warehouse file")
    show.add_argument("--schema", default="factorflow")
    show.add_argument("--user", default=None, type=int, help="user id (default: the smallest)")
    show.add_argument("--top", type=int, default=5)
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factorflow`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        print(f"factorflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
