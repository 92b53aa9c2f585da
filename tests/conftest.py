import sys
from pathlib import Path

import pytest

# tests/ holds small shared modules (golden discovery); make them importable as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch, tmp_path):
    """Tests never reach a model hub, and never write into the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HV_ROOT", str(tmp_path / "hv_root"))

