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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models are dominated by threading overhead: one thread is faster and gives repeatable sums."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
