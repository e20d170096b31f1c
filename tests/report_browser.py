"""Headless Chromium for the report tests: the page as a browser renders it, offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
INSTALL_HINT = "no chromium binary on PATH; install it with `apt-get install -y chromium` (CI does)"


def chromium() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(binary: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True)


def dump_dom(binary: str, page: Path, profile: Path) -> str:
    """The DOM after the page loaded and laid out (what the user's browser would hold)."""
    return _run(binary, page, profile, "--dump-dom").stdout


def screenshot(binary: str, page: Path, profile: Path, png: Path, size: str) -> Path:
    _run(binary, page, profile, f"--screenshot={png}", f"--window-size={size}")
    return png
