"""Headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium, for pages freelabel
writes; shared by the review tests and benchmarks/review.py."""

from __future__ import annotations

import os
import shutil


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) executables when both are installed, else None."""
    browser = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1280, height: int = 900):
    """A Selenium WebDriver on headless Chromium that keeps the page's console messages (``get_log("browser")``).
    Raises RuntimeError when Chromium or its driver is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromium-driver are not installed (setup.sh installs them on Debian)")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for argument in ("--headless=new", f"--window-size={width},{height}", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    if os.geteuid() == 0:  # Chromium refuses to run as root inside its sandbox
        options.add_argument("--disable-setuid-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(paths[1]))
