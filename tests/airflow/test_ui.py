"""The factorflow page in the Airflow UI, served by a real api-server: anonymous
requests are refused without data; a logged-in user sees the model runs in a
real headless Chromium, and a screenshot is saved."""

from __future__ import annotations

import time

import pytest

from tests.browser import ARTIFACTS, chromium, log_in

pytestmark = pytest.mark.integration

PATHS = ("/factorflow/", "/factorflow/api/runs", "/factorflow/curve.png?model_id=demo-run")
#: What the DAG passes to publish: stage -> its task's wall seconds and peak RSS (MB).
TIMINGS = {"extract": {"seconds": 1.25, "peak_rss_mb": 312.4},
           "train": {"seconds": 42.5, "peak_rss_mb": 1843.0}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, small_model):
    from tests.stack import running_stack
    from tests.warehouses import publish_small_model

    root = tmp_path_factory.mktemp("ui")
    warehouse = root / "warehouse.duckdb"
    publish_small_model(warehouse, small_model, "earlier-run")
    publish_small_model(warehouse, small_model, "demo-run", candidates=[small_model["model_dir"]],
                        run_info={"dag_id": "factorize_ratings", "dag_run_id": "demo-run",
                                  "timings": TIMINGS})
    import duckdb

    with duckdb.connect(str(warehouse)) as con:  # as a warm-started daily run records it
        con.execute("UPDATE factorflow.model_runs SET warm_start_from = 'earlier-run' "
                    "WHERE model_id = 'demo-run'")
    with running_stack(root / "airflow", {"FACTORFLOW_WAREHOUSE": str(warehouse)},
                       api_server_only=True) as stack:
        yield stack


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("token", [None, "not-a-jwt"])
def test_anonymous_or_forged_requests_get_no_data(stack, path, token):
    status, body = stack.request("GET", path, token=token)
    assert status in (401, 403), (status, body)
    assert "demo-run" not in str(body) and "valid_rmse" not in str(body)


def test_an_authenticated_user_gets_the_runs_and_curves(stack):
    status, runs = stack.request("GET", "/factorflow/api/runs")
    assert status == 200, runs
    by_id = {r["model_id"]: r for r in runs}
    assert by_id["demo-run"]["is_current"] and by_id["demo-run"]["valid_rmse"] > 0
    assert by_id["demo-run/candidate-0"]["candidate_of"] == "demo-run"
    assert by_id["demo-run"]["warm_start_from"] == "earlier-run"
    assert by_id["earlier-run"]["warm_start_from"] is None
    # each stage's wall time and peak memory, in the API and on the page
    assert by_id["demo-run"]["stages"] == TIMINGS
    status, page = stack.request("GET", "/factorflow/")
    assert status == 200 and "stages: wall s · peak RSS MB" in page
    assert "<th>warm start from</th>" in page and "<td>earlier-run</td>" in page
    assert "extract 1.2 s · 312 MB<br>train 42.5 s · 1,843 MB" in page
    import urllib.request

    request = urllib.request.Request(stack.base + PATHS[2])
    request.add_header("Authorization", f"Bearer {stack.token()}")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"
    status, _ = stack.request("GET", "/factorflow/curve.png?model_id=nope")
    assert status == 404
    # the plugin's view is listed for the UI's navigation
    status, plugins = stack.request("GET", "/api/v2/plugins")
    [plugin] = [p for p in plugins["plugins"] if p["name"] == "factorflow"]
    assert plugin["external_views"][0]["href"] == "/factorflow/"


def test_the_page_renders_in_chromium_after_logging_in(stack):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    try:
        wait = WebDriverWait(browser, 60)
        browser.get(stack.base + "/factorflow/")  # not logged in: refused
        assert "demo-run" not in browser.page_source
        log_in(browser, stack)
        browser.get(stack.base + "/factorflow/")
        row = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, 'tr.current[data-model-id="demo-run"]')))
        assert "demo-run" in row.text
        wait.until(lambda b: b.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "factorflow-model-runs.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        # the same page inside the Airflow UI, under the plugin's nav entry
        browser.get(stack.base + "/plugin/factorflow")
        wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
        time.sleep(2)
        browser.save_screenshot(str(ARTIFACTS / "factorflow-in-airflow-ui.png"))
        print(f"\nscreenshots: {shot} and {ARTIFACTS / 'factorflow-in-airflow-ui.png'}")
    finally:
        browser.quit()
