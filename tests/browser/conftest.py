"""Headless chromium (Debian's package) through chromedriver, for the browser tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest


def _need(path: str) -> str:
    found = shutil.which(path) or (path if os.path.exists(path) else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is not installed (scripts/test.sh installs chromium and chromium-driver)")
        pytest.skip(f"{path} not installed")
    return found


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_bin = _need("/usr/bin/chromium"), _need("/usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    d.set_script_timeout(10)
    try:
        yield d
    finally:
        d.quit()
