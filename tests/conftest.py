"""Test-wide settings: the suite never reads a storage URL from the developer's environment."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_storage_from_the_environment(monkeypatch):
    """``LIGHTOPT_STORAGE`` (the default of ``--storage``) would send the CLI tests' studies to a real database."""
    monkeypatch.delenv("LIGHTOPT_STORAGE", raising=False)
