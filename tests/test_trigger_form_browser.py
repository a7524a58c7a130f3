"""The real trigger form, in a real browser, for every DAG.

A real api-server, scheduler and dag-processor (LocalExecutor, metadata in the
local PostgreSQL) serve Airflow's own React UI; headless Chromium logs in,
opens each DAG's Trigger dialog and uses it as a person does: the Trigger
button must be enabled with the defaults, no optional field may be marked
required, the fields sit in their sections with their bounds described; an
invalid schema name is refused with the API's 400 message on screen and no
run; the defaults create a run that succeeds. Screenshots of every form land in
``.test-artifacts/``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser import ARTIFACTS, chromium, log_in
from tests.conftest import SMALL_DEMO

pytestmark = pytest.mark.integration

#: Each DAG, in the order its run can succeed (the downstream DAG needs a model).
DAGS = ("factorize_ratings", "tune_factorization", "fold_in_new_users", "recommendations_daily")
ROW = '[role="dialog"] [data-scope="field"][data-part="root"]'
OPTIONAL = {"warehouse_conn_id", "source_conn_id", "patience", "samples"}
SECTIONS = {"factorize_ratings": ["Data", "Model", "Gradient optimizers only", "Publishing"],
            "tune_factorization": ["Data", "Sweep", "Model", "Gradient optimizers only",
                                   "Publishing"],
            "fold_in_new_users": ["Data", "Publishing"],
            "recommendations_daily": ["Data", "Publishing"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from factorflow.warehouse.demo import write_demo_warehouse
    from tests.stack import running_stack

    root = tmp_path_factory.mktemp("trigger-form")
    warehouse = root / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    write_demo_warehouse(warehouse, **SMALL_DEMO)
    env = {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "FACTORFLOW_WAREHOUSE": str(warehouse),
           "FACTORFLOW_ARTIFACTS_DIR": str(root / "artifacts")}
    with running_stack(root / "airflow", env, dags=tuple(DAGS)) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser(stack):
    driver = chromium()
    try:
        log_in(driver, stack)
        yield driver
    finally:
        driver.quit()


def _runs(stack, dag_id: str) -> list[dict[str, Any]]:
    status, body = stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    assert status == 200, body
    return body["dag_runs"]


def _open_form(browser, stack, dag_id: str):
    """The Trigger dialog of ``dag_id``; returns its submit button."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(f"{stack.base}/dags/{dag_id}")
    wait.until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, '[data-testid="trigger-dag-button"]'))).click()
    return wait.until(ec.presence_of_element_located(
        (By.CSS_SELECTOR, '[data-testid="trigger-dag-submit"]')))


def _unfold(browser, section: str) -> None:
    """Click a section's header as a person does (the form shows one section at a time)."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    header = browser.find_element(
        By.CSS_SELECTOR, f'[role="dialog"] [data-part="item-trigger"][id$=":trigger:{section}"]')
    for _ in range(10):  # another section may still be folding over it
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", header)
        time.sleep(0.4)
        try:
            header.click()
            break
        except ElementClickInterceptedException:
            continue
    WebDriverWait(browser, 10).until(lambda _: header.get_attribute("aria-expanded") == "true")
    time.sleep(0.6)  # the unfolding animation


def _field_rows(browser) -> dict[str, Any]:
    """``{param name: its form row}`` for the rows rendered in the dialog."""
    from selenium.webdriver.common.by import By

    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, ROW):
        for element in row.find_elements(By.CSS_SELECTOR, '[id*="element_"]'):
            name = element.get_attribute("id").split("element_", 1)[1].split(":", 1)[0]
            rows.setdefault(name, row)
    return rows


def _screenshot(browser, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / name))


def _set_text(browser, name: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = browser.find_element(By.CSS_SELECTOR, f'input#element_{name}')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text)
    field.send_keys(Keys.TAB)


@pytest.mark.parametrize("dag_id", DAGS)
def test_the_form_opens_enabled_grouped_and_described(stack, browser, dag_id):
    from selenium.webdriver.common.by import By

    submit = _open_form(browser, stack, dag_id)
    assert submit.is_enabled(), "Trigger is disabled with the DAG's own defaults"
    _, dag = stack.request("GET", f"/api/v2/dags/{dag_id}/details")
    headers = [h.get_attribute("id").rsplit(":", 1)[1] for h in browser.find_elements(
        By.CSS_SELECTOR, '[role="dialog"] [data-part="item-trigger"]')]
    assert [h for h in headers if h != "advancedOptions"] == SECTIONS[dag_id]
    seen = set()
    for section in SECTIONS[dag_id]:
        _unfold(browser, section)
        _screenshot(browser, f"trigger-form-{dag_id}-{section.split()[0].lower()}.png")
        for name, row in _field_rows(browser).items():
            if not row.is_displayed():
                continue
            seen.add(name)
            text = " ".join(row.text.split())
            assert dag["params"][name]["schema"]["section"] == section, name
            assert dag["params"][name]["description"] in text, name
            required = row.find_elements(By.CSS_SELECTOR, ".chakra-field__requiredIndicator")
            assert bool(required) == (name not in OPTIONAL), f"{name}: required mark is wrong"
            assert "required" not in text.lower(), f"{name}: {text}"
            if "maximum" in dag["params"][name]["schema"]:  # what the form clamps to is said
                assert "Between" in text or "at most" in text, f"{name} hides its bounds"
    assert seen == set(dag["params"]), "every param has a field in its section, none more"
    assert not browser.find_elements(By.CSS_SELECTOR, f"{ROW}[data-invalid]"), "a field is invalid"
    assert submit.is_enabled()


@pytest.mark.parametrize("dag_id", DAGS)
def test_an_invalid_schema_shows_the_400_and_creates_no_run(stack, browser, dag_id):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = {r["dag_run_id"] for r in _runs(stack, dag_id)}
    submit = _open_form(browser, stack, dag_id)
    _unfold(browser, "Publishing")
    _set_text(browser, "schema", "bad schema!")
    submit.click()
    alert = WebDriverWait(browser, 30).until(lambda b: [
        e for e in b.find_elements(By.CSS_SELECTOR, '[role="dialog"] [data-testid="error-alert"]')
        if "param schema" in e.text])[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", alert)
    _screenshot(browser, f"trigger-form-{dag_id}-refused.png")
    assert "400 Bad Request" in alert.text
    assert "Invalid input for param schema: 'bad schema!' does not match" in alert.text
    time.sleep(2)
    created = [r for r in _runs(stack, dag_id) if r["dag_run_id"] not in before
               and (r.get("conf") or {}).get("schema") == "bad schema!"]
    assert created == []


@pytest.mark.parametrize("dag_id", DAGS)
def test_the_defaults_trigger_a_run_that_succeeds(stack, browser, dag_id):
    before = {r["dag_run_id"] for r in _runs(stack, dag_id)}
    submit = _open_form(browser, stack, dag_id)
    submit.click()

    def new_manual_run():
        runs = [r for r in _runs(stack, dag_id)
                if r["dag_run_id"] not in before and r["run_type"] == "manual"]
        return runs[0] if runs else None

    run = stack.wait_for(new_manual_run, 60, f"a {dag_id} run from the form")
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}"
    done = stack.wait_for(lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
        stack.request("GET", path)[1]), 600, f"the {dag_id} run to finish")
    if done["state"] != "success":
        _, tis = stack.request("GET", f"{path}/taskInstances")
        pytest.fail(f"{dag_id} run {done['state']}: "
                    + str({t["task_id"]: t["state"] for t in tis["task_instances"]}))
    assert (run.get("conf") or {}).get("schema", "factorflow") == "factorflow"
