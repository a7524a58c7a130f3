"""Headless Debian Chromium for the browser tests, logged in to a test stack's UI."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.conftest import ROOT

#: Screenshots a person can look at after a run.
ARTIFACTS = ROOT / ".test-artifacts"


def chromium() -> Any:
    """A Selenium driver on Debian's chromium, or a skip naming what is missing."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("Debian chromium and chromium-driver are not installed "
                    "(make test installs them when it can run apt-get as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def log_in(browser: Any, stack: Any, user: str = "admin") -> None:
    """Through the SimpleAuthManager login form, as a person does."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(stack.base + "/auth/login")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
    browser.find_element(By.NAME, "password").send_keys(stack.password(user))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda b: b.get_cookie("_token"))
