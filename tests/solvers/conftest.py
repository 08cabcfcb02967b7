"""Shared fixtures of the solver tests: the exact signals of ../shared/validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXACT_JSON = Path(__file__).resolve().parents[3] / "shared" / "validation" / "exact_signals.json"


@pytest.fixture(scope="session")
def exact() -> dict:
    if not EXACT_JSON.is_file():
        pytest.skip(f"{EXACT_JSON} not available")
    return json.loads(EXACT_JSON.read_text())
