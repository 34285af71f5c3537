"""Shared pytest set-up: offline model loading and paths to the project's tools."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = REPO_ROOT / "node_modules" / ".bin"

CHROMIUM_ENV = "LETHE_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium() -> str:
    """The system Chromium (Debian package, never a browser download); missing = setup error."""
    path = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path} for the explorer's browser test: run make setup "
            f"(scripts/ensure_chromium.sh installs the Debian package), or set {CHROMIUM_ENV}"
        )
    return path
