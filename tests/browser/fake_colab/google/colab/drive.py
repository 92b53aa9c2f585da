"""``google.colab.drive``: mounting "Drive" creates ``$HV_FAKE_COLAB_DRIVE/MyDrive`` (a temp folder)."""

import os
from pathlib import Path

from google.colab import _calls


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    folder = os.environ.get("HV_FAKE_COLAB_DRIVE")
    if not folder:
        raise ValueError("the fake google.colab.drive needs $HV_FAKE_COLAB_DRIVE (a temp folder)")
    (Path(folder) / "MyDrive").mkdir(parents=True, exist_ok=True)
    _calls.record("drive.mount", mountpoint=str(mountpoint), force_remount=bool(force_remount))
    print(f"Mounted at {mountpoint}")  # what Colab prints


def flush_and_unmount(timeout_ms=24 * 60 * 60 * 1000):
    _calls.record("drive.flush_and_unmount")
