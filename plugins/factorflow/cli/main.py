"""``factorflow`` command line: demo data, fitting rating files, a look at what was published."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence


def _demo_data(args: argparse.Namespace) -> int:
    from factorflow.warehouse.demo import write_demo_warehouse

    summary = write_demo_warehouse(args.warehouse, table=args.table, seed=args.seed,
                                   n_users=args.users, n_items=args.items,
                                   n_ratings=args.ratings)
    print(f"demo warehouse {summary['warehouse']}: {summary['table']} holds "
          f"{summary['n_ratings']:,} ratings")
    return 0


def _show(args: argparse.Namespace) -> int:
    from factorflow.warehouse import open_warehouse

    result = open_warehouse(args.warehouse).latest_result(schema=args.schema, user_id=args.user,
                                                         top_n=args.top)
    if args.json:
        print(json.dumps(result, default=str, indent=2))
        return 0
    m = result["model"]
    print(f"\ncurrent model {m['model_id']} (rank {m['rank']}, {m['epochs_run']} epochs, "
          f"fit {m['fit_seconds']:.1f} s, published {m['created_at']:%Y-%m-%d %H:%M:%S})")
    print(f"  validation RMSE  {m['valid_rmse']:.4f}")
    print(f"  bias-only RMSE   {m['baseline_valid_rmse']:.4f}  "
          f"({100 * (1 - m['valid_rmse'] / m['baseline_valid_rmse']):.1f}% lower with factors)")
    print(f"\ntop {args.top} recommendations for user {result['user_id']}:")
    print("  rank  item_id   score")
    for r in result["recommendations"]:
        print(f"  {r['rank']:>4}  {r['item_id']!s:>7}  {r['score']:.3f}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    from factorflow.cli.fit_files import fit_files

    def progress(line: str) -> None:
        # stderr, so that --json leaves stdout to the one JSON object.
        print(line, file=sys.stderr, flush=True)

    init_from, exported = args.init_from, None
    if args.warehouse and init_from:  # a published model id: read it back first
        import tempfile

        from factorflow.stages.current_model import export_current_model

        exported = tempfile.TemporaryDirectory(prefix="factorflow-init-")
        found = export_current_model(args.warehouse, exported.name, schema=args.schema,
                                     model_id=None if init_from == "current" else init_from,
                                     log_fn=progress)
        init_from = found["model_dir"] or str(Path(exported.name) / "missing")
    try:
        result = fit_files(
            args.train, test_path=args.test, format=args.format, out=args.out,
            valid_fraction=args.valid_fraction, patience=args.patience, log=progress,
            rank=args.rank, epochs=args.epochs, loss=args.loss, optimizer=args.optimizer,
            learning_rate=args.lr, reg=args.reg, restarts=args.restarts, seed=args.seed,
            init_from=init_from,
        )
    except OSError as exc:  # unreadable path, directory given, disk full on --out
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(str(exc)) from exc
    finally:
        if exported is not None:
            exported.cleanup()
    if exported is not None and result.get("warm_start_from"):
        result["warm_start_from"] = found["model_id"]  # the published id, not the temporary copy
    if args.json:
        print(json.dumps(result, allow_nan=False))
        return 0
    c = result["config"]
    print(f"trained on {result['n_train']:,} ratings ({result['n_users']:,} users x "
          f"{result['n_items']:,} items): rank {c['rank']}, {result['epochs_run']} epochs "
          f"(best {result['best_epoch']}) in {result['fit_seconds']:.1f} s, "
          f"{result['ratings_per_second']:,.0f} ratings/s")
    print(f"  train RMSE  {result['train_rmse']:.4f}")
    if "valid_rmse" in result:
        print(f"  valid RMSE  {result['valid_rmse']:.4f}  ({result['n_valid']:,} ratings)")
    if result["n_test"]:
        unknown = max(result["n_test_unknown_user"], result["n_test_unknown_item"])
        print(f"  test RMSE   {result['rmse']:.4f}  MAE {result['mae']:.4f}  "
              f"({result['n_test']:,} ratings, {result['n_test_unknown_user']:,} with an "
              f"unseen user, {result['n_test_unknown_item']:,} with an unseen item)"
              if unknown else
              f"  test RMSE   {result['rmse']:.4f}  MAE {result['mae']:.4f}  "
              f"({result['n_test']:,} ratings)")
        print(f"  bias-only   {result['baseline_rmse']:.4f}  MAE {result['baseline_mae']:.4f}")
    if result["out"]:
        print(f"model, id maps and metrics written to {result['out']}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from factorflow.warehouse import open_warehouse

    result = open_warehouse(args.warehouse).rollback(to=args.to, schema=args.schema)
    print(f"{result['schema']}.current_* now show model {result['current_model']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``factorflow`` command."""
    parser = argparse.ArgumentParser(prog="factorflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo-data", help="write the deterministic demo ratings table")
    demo.add_argument("--warehouse", required=True,
                      help="DuckDB file to create or update, or a postgresql:// URI")
    demo.add_argument("--table", default="raw.ratings")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--users", type=int, default=3000)
    demo.add_argument("--items", type=int, default=2000)
    demo.add_argument("--ratings", type=int, default=200_000)
    demo.set_defaults(func=_demo_data)

    show = sub.add_parser("show", help="the current model and one user's top items")
    show.add_argument("--warehouse", required=True,
                      help="DuckDB warehouse file, or a postgresql:// URI")
    show.add_argument("--schema", default="factorflow")
    show.add_argument("--user", default=None, help="user id, as published (default: the smallest)")
    show.add_argument("--top", type=int, default=5)
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(func=_show)

    back = sub.add_parser("rollback", help="point the current_* views at an earlier kept model")
    back.add_argument("--warehouse", required=True,
                      help="DuckDB warehouse file, or a postgresql:// URI")
    back.add_argument("--schema", default="factorflow")
    back.add_argument("--to", required=True, metavar="MODEL_ID", help="a model_id in model_runs")
    back.set_defaults(func=_rollback)

    from factorflow.cli.readers import FORMATS  # imports Polars lazily: cheap here

    fit = sub.add_parser("fit", help="train a factor model on a ratings file, score a test file")
    fit.add_argument("--train", required=True, help="training ratings file")
    fit.add_argument("--test", default=None, help="test ratings file (unseen ids are kept)")
    fit.add_argument("--format", default="auto", choices=FORMATS,
                     help="file format of --train and --test (default: detect each)")
    fit.add_argument("--rank", type=int, default=None, help="latent factors")
    fit.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    fit.add_argument("--loss", default=None, help="loss name, or module:function")
    fit.add_argument("--optimizer", default=None, help="e.g. adam, gd, normalized_gd")
    fit.add_argument("--lr", type=float, default=None, help="learning rate")
    fit.add_argument("--reg", type=float, default=None, help="L2 strength")
    fit.add_argument("--restarts", type=int, default=None,
                     help="random restarts (when the training engine supports them)")
    fit.add_argument("--seed", type=int, default=None, help="seed of init and split")
    fit.add_argument("--patience", type=int, default=None,
                     help="early-stopping patience in epochs (needs --valid-fraction)")
    fit.add_argument("--valid-fraction", type=float, default=0.0,
                     help="share of each user's train ratings held out for early stopping")
    fit.add_argument("--out", default=None, help="directory for model, id maps, metrics")
    fit.add_argument("--init-from", default=None, metavar="MODEL_DIR_OR_NPZ",
                     help="warm start from a previous --out directory (or its model.npz), "
                          "or with --warehouse a published model id ('current': the current "
                          "one): known users and items start at their previous factors; a "
                          "model that cannot be used (rank or loss changed, missing) means a "
                          "cold start, with a line saying why")
    fit.add_argument("--warehouse", default=None,
                     help="with --init-from MODEL_ID: the DuckDB file or postgresql:// URI "
                          "the model was published to")
    fit.add_argument("--schema", default="factorflow",
                     help="with --warehouse: the published schema (default factorflow)")
    fit.add_argument("--json", action="store_true",
                     help="print one JSON object on stdout (progress stays on stderr)")
    fit.set_defaults(func=_fit)

    from factorflow.cli.fold_in_command import add_fold_in_parser

    add_fold_in_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``factorflow`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, LookupError, ValueError, ConnectionError, RuntimeError) as exc:
        print(f"factorflow {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
