"""Every code block of the README, run as written, and its quoted outputs compared
with what the code prints today.

The demo block is what ``make demo`` prints: the test builds the same demo
warehouse in a temporary project folder, runs the DAG through the real
``airflow dags test``, and compares ``factorflow show`` with the README. The
Python blocks run in that folder; the DuckDB SQL blocks run against its
warehouse and their ``--`` result lines must match; the command-line blocks run
where this machine can (MovieLens files beside the checkout). Every block is
claimed by one check, and a block no check claims fails the last test, so a new
block cannot go untested silently; the few that cannot run here say why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
BIN = Path(sys.executable).parent


class Block(NamedTuple):
    lang: str
    text: str
    line: int


def code_blocks() -> list[Block]:
    """The README's fenced blocks, in order."""
    blocks, lines = [], README.read_text().splitlines()
    start = lang = None
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            if start is None:
                start, lang = number, line[3:].strip()
            else:
                blocks.append(Block(lang, "\n".join(lines[start:number - 1]), start))
                start = None
    return blocks


#: Blocks that cannot run on this machine, by a phrase they contain, and why.
NOT_RUN = {
    "make demo   #": "the README's own two commands: CI runs `make test`; the closing "
                    "check runs both on a fresh clone",
    "docker compose build": "no Docker engine here; tests/test_deployment.py checks the "
                            "compose file statically",
    "db.example.com": "an example server and credentials to replace with your own; the "
                      "same path runs against the local PostgreSQL in "
                      "tests/dags/test_postgres_warehouse.py",
    "postgresql://user@host": "an example PostgreSQL URI; rollback on PostgreSQL is tested "
                              "in tests/test_versions.py",
    "airflow dags test tune_factorization": "a six-candidate sweep of the full demo; the same "
                                            "DAG runs end to end in "
                                            "tests/dags/test_tune_factorization.py",
    "size  task          wall s": "make bench-pipeline's table, a benchmark record of its "
                                  "date (its 25M and 100M runs take 5 and 21 minutes)",
    "factorflow to Surprise SVD RMSE": "make bench's table, a benchmark record of its date "
                                   "(tests/bench/README.md says how to reproduce it)",
}


def _python_blocks() -> list[Block]:
    return [b for b in code_blocks() if b.lang == "python"]


def _not_run_reason(block: Block) -> str | None:
    return next((why for phrase, why in NOT_RUN.items() if phrase in block.text), None)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A folder laid out like a fresh clone after ``make demo``: data/warehouse.duckdb
    with the demo table, the DAG run once through the real ``airflow dags test``."""
    root = tmp_path_factory.mktemp("readme")
    warehouse = root / "data" / "warehouse.duckdb"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}",
           "FACTORFLOW_WAREHOUSE": str(warehouse),
           "FACTORFLOW_ARTIFACTS_DIR": str(root / "data" / "artifacts"),
           "FACTORFLOW_DATA_ROOTS": str(root / "data")}
    for argv in (["factorflow", "demo-data", "--warehouse", str(warehouse)],
                 ["airflow", "dags", "test", "factorize_ratings"]):
        run = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True,
                             timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return {"root": root, "warehouse": warehouse, "env": env}


def _run(argv: list[str], project: dict, **kwargs) -> str:
    run = subprocess.run(argv, cwd=project["root"], env=project["env"], capture_output=True,
                         text=True, timeout=600, **kwargs)
    assert run.returncode == 0, f"{argv}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
    return run.stdout


def _numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+\.\d+|\b\d+\b", text)


def test_the_demo_output_is_what_make_demo_prints(project):
    [quoted] = [b for b in code_blocks() if b.text.startswith("current model ")]
    shown = _run(["factorflow", "show", "--warehouse", str(project["warehouse"])], project)
    # the first line names the run (id, time, fit seconds): the rest must be equal
    ours, theirs = shown.strip().splitlines(), quoted.text.strip().splitlines()
    assert re.sub(r"manual__\S+|fit [\d.]+ s|published .*\)", "", ours[0]) == \
        re.sub(r"manual__\S+|fit [\d.]+ s|published .*\)", "", theirs[0])
    assert ours[1:] == theirs[1:], "README line %d: quoted\n%s\nprinted\n%s" % (
        quoted.line, quoted.text, shown)


def _sql_statements(block: Block) -> list[tuple[str, str]]:
    """``(sql, quoted result)`` pairs: each statement is followed by ``--  result`` lines."""
    pairs, sql, result = [], [], []
    for line in block.text.splitlines() + ["-- end"]:
        if line.startswith("--  "):
            result.append(line[4:])
        elif line.startswith("-- ") or not line.strip():
            if sql and (result or line == "-- end" or line.startswith("-- ")):
                pairs.append(("\n".join(sql), " ".join(result)))
                sql, result = [], []
        else:
            sql.append(line)
    return pairs


def _duckdb_blocks() -> list[Block]:
    return [b for b in code_blocks() if b.lang == "sql" and "factorflow.factor_" not in b.text]


def _assert_prints_quoted(block: Block, fetch) -> None:
    """Each statement of ``block`` through ``fetch(sql) -> rows``; rows equal the quote,
    number by number, to the quote's own decimals."""
    for sql, quoted in _sql_statements(block):
        rows = fetch(sql.rstrip(";"))
        if not quoted:
            continue
        printed, expected = _numbers(", ".join(map(str, rows))), _numbers(quoted)
        assert len(printed) == len(expected), (block.line, sql, rows, quoted)
        for got, want in zip(printed, expected):
            decimals = len(want.split(".")[1]) if "." in want else 0
            assert round(float(got), decimals) == float(want), (block.line, sql, rows, quoted)


def test_duckdb_sql_blocks_print_what_they_quote(project):
    import duckdb

    blocks = _duckdb_blocks()
    assert blocks
    with duckdb.connect(str(project["warehouse"]), read_only=True) as con:
        for block in blocks:
            _assert_prints_quoted(block, lambda sql: con.execute(sql).fetchall())


def _postgres_blocks() -> list[Block]:
    return [b for b in code_blocks() if b.lang == "sql" and "factorflow.factor_" in b.text]


def test_postgres_sql_blocks_print_what_they_quote(project):
    """The demo's model, published to the local PostgreSQL as the DAG would, then queried."""
    import psycopg

    from factorflow.stages.publish import publish_model
    from tests.warehouses import PG_URI, postgres_skip_reason

    if reason := postgres_skip_reason():
        pytest.skip(reason)
    [run] = (project["root"] / "data" / "artifacts" / "factorize_ratings").iterdir()
    with psycopg.connect(PG_URI, autocommit=True) as con:
        con.execute("DROP SCHEMA IF EXISTS factorflow CASCADE")
    try:
        publish_model(PG_URI, model_id="readme-demo", model_dir=run / "model",
                      matrix_dir=run / "matrix")
        with psycopg.connect(PG_URI, autocommit=True) as con:
            for block in _postgres_blocks():
                _assert_prints_quoted(block, lambda sql: con.execute(sql).fetchall())
    finally:
        with psycopg.connect(PG_URI, autocommit=True) as con:
            con.execute("DROP SCHEMA IF EXISTS factorflow CASCADE")


def _module_name(block: Block) -> str | None:
    """``mylosses`` for a block that starts ``# mylosses.py``: a module the README asks for."""
    match = re.match(r"# (\w+)\.py\b", block.text)
    return match[1] if match else None


def _write_module(block: Block, project: dict) -> str:
    """Save such a block as its module in the project folder; returns its name."""
    name = _module_name(block)
    (project["root"] / f"{name}.py").write_text(block.text)
    return name


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: f"line{b.line}")
def test_python_block_runs_as_written(project, block):
    module = _module_name(block)
    code = f"import {_write_module(block, project)}" if module else block.text
    if "from kubernetes" in code:
        pytest.importorskip("kubernetes", reason="the kubernetes client is not installed here "
                                                 "(the KubernetesExecutor's own dependency)")
    _run([sys.executable, "-c", code], project)


def _cli_blocks() -> list[Block]:
    return [b for b in code_blocks() if b.lang == "bash" and _not_run_reason(b) is None]


def test_command_line_blocks_run_as_written(project):
    """Each command, from the project folder; placeholders take a real value."""
    import duckdb

    data = SHARED_DATA / "ml-100k"
    with duckdb.connect(str(project["warehouse"]), read_only=True) as con:
        [(model_id,)] = con.execute("SELECT model_id FROM factorflow.current_model").fetchall()
    for name in ("u1.base", "u1.test"):
        if (data / name).exists():
            shutil.copy(data / name, project["root"] / name)
    if (SHARED_DATA / "ml-latest-small" / "ratings.csv").exists():
        shutil.copy(SHARED_DATA / "ml-latest-small" / "ratings.csv", project["root"])
    for block in _python_blocks():
        if _module_name(block):  # commands may name the README's own modules
            _write_module(block, project)
    for block in _cli_blocks():
        script = block.text.replace("<model_id>", model_id)
        missing = [f for f in ("u1.base", "ratings.csv")
                   if f in script and not (project["root"] / f).exists()]
        if missing:
            print(f"README line {block.line}: skipped, {missing} not beside the checkout")
            continue
        env = {**project["env"], "PYTHONPATH": str(project["root"])}
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=project["root"],
                             env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, f"README line {block.line}:\n{script}\n{run.stderr[-3000:]}"


def _layout_block() -> Block:
    return next(b for b in code_blocks() if b.text.startswith("dags/ "))


def test_the_layout_names_every_package_and_module():
    """The Layout tree names every package and module of the library, and nothing gone."""
    text = _layout_block().text
    words = set(re.findall(r"[A-Za-z_]+", text))
    library = ROOT / "plugins" / "factorflow"
    packages = {p.name for p in library.rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in library.rglob("*.py") if not p.stem.startswith("__")}
    assert not (packages | modules) - words, sorted((packages | modules) - words)
    named = {m for m in re.findall(r"\b(\w+)\.py\b", text) if not m.startswith("test_")}
    named -= {"factorflow_plugin"}
    assert named <= modules, f"the layout names modules that do not exist: {sorted(named - modules)}"


def test_every_block_is_run_or_says_why_not():
    claimed = {b.line for b in _python_blocks() + _duckdb_blocks() + _cli_blocks()}
    claimed.add(_layout_block().line)
    claimed |= {b.line for b in code_blocks() if b.text.startswith("current model ")
                or b.text.startswith("ratings validation failed")}
    claimed |= {b.line for b in _postgres_blocks()}
    unclaimed = [b for b in code_blocks() if b.line not in claimed and not _not_run_reason(b)]
    assert not unclaimed, "README blocks no test runs: " + ", ".join(
        f"line {b.line} ({b.lang or 'output'})" for b in unclaimed)
    for block in code_blocks():
        if block.line not in claimed:
            print(f"README line {block.line}: not run here: {_not_run_reason(block)}")


#: The bad table behind the README's validation report: the demo ratings with
#: one row in 88 rated 7.5 (off the 1-5 scale) and three pairs rated twice.
BAD_RATINGS_SQL = """
SELECT user_id, item_id,
       CASE WHEN (user_id * 31 + item_id) % 88 = 0 THEN 7.5 ELSE rating END AS rating, rated_at
FROM raw.ratings
UNION ALL
(SELECT * FROM raw.ratings WHERE user_id % 500 = 33 ORDER BY user_id, item_id LIMIT 3)
"""


def test_the_validation_report_is_what_validate_prints(project):
    import duckdb

    from factorflow.stages.validate import RatingsValidationError, validate_ratings

    [quoted] = [b for b in code_blocks() if b.text.startswith("ratings validation failed")]
    path = project["root"] / "extract" / "ratings.parquet"
    path.parent.mkdir(exist_ok=True)
    with duckdb.connect(str(project["warehouse"]), read_only=True) as con:
        con.execute(f"COPY ({BAD_RATINGS_SQL}) TO '{path}' (FORMAT parquet)")
    with pytest.raises(RatingsValidationError) as failure:
        validate_ratings(path, rating_min=1.0, rating_max=5.0, min_rows=100)
    report = failure.value.report.replace(str(path), ".../extract/ratings.parquet").splitlines()
    lines = iter(report)  # the quoted lines, in order, "..." standing for lines left out
    for line in quoted.text.splitlines():
        if line.strip() == "...":
            continue
        assert line in lines, f"README line {quoted.line}: {line!r} not printed; printed:\n" + \
            "\n".join(report)
