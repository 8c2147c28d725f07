"""A real browser for the console's tests: Debian's chromium, headless, driven by Selenium through chromium-driver.

`make browser` (run by `make test` and .ci/run) installs both when missing. Where they cannot be installed, the
browser tests skip with one line, except under CI=true, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
"""Headless, and nothing that reaches for the network by itself (this machine's network is closed)."""


def _binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromium-driver", driver)) if p is None)
        message = f"{missing} not installed ('make browser' installs them with apt-get)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}: the browser tests must run in CI")
        pytest.skip(message)
    return chromium, driver


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless chromium with a fresh profile, closed (and its profile removed) at the end."""
    binary, driver = _binaries()
    profile = Path(tempfile.mkdtemp(prefix="authsvc-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        browser.set_page_load_timeout(30)
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
