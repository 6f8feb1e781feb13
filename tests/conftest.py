"""Shared fixtures: paths to the real data the tests (never the product) read."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
COMFYMIND = SHARED_DATA / "workflows" / "comfymind"


@pytest.fixture(scope="session")
def comfymind_files() -> list[Path]:
    files = sorted(COMFYMIND.glob("*_api.json"))
    assert len(files) == 52, f"expected the 52 real workflows in {COMFYMIND}"
    return files
