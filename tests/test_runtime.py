import json
import subprocess
import sys
import types
from importlib import metadata

import pytest

from helpers import runtime
from helpers.errors import InputError


def gpu(name, gb):
    return runtime.GPUInfo(name=name, total_gb=gb, bf16=True, capability=(8, 0))


@pytest.mark.parametrize(
    "name, gb, tier, offload",
    [
        ("Tesla T4", 14.7, "t4", "model"),
        ("NVIDIA L4", 22.2, "l4", "none"),
        ("NVIDIA A100-SXM4-40GB", 39.4, "a100-40", "none"),
        ("NVIDIA A100-SXM4-80GB", 79.2, "large", "none"),
        ("NVIDIA H100 80GB HBM3", 79.1, "large", "none"),
        ("GeForce GTX 1080", 8.0, "small", "sequential"),
    ],
)
def test_plan_tiers(name, gb, tier, offload):
    plan = runtime.plan_for(gpu(name, gb))
    assert (plan.tier, plan.offload, plan.device, plan.dtype_name) == (tier, offload, "cuda", "float16")
    assert name in plan.describe()


def test_smaller_cards_decode_in_smaller_chunks():
    chunks = [runtime.plan_for(gpu("g", gb)).vae_decode_chunk for gb in (8, 15, 22, 40, 80)]
    assert chunks == sorted(chunks) and chunks[0] < chunks[-1]


def test_cpu_plan():
    plan = runtime.plan_for(None)
    assert plan.device == "cpu" and plan.dtype_name == "float32"
    import torch

    assert plan.dtype is torch.float32


def test_plan_override(monkeypatch):
    monkeypatch.setenv("HV_PLAN", "t4")
    assert runtime.memory_plan().tier == "t4"
    with pytest.raises(InputError, match="unknown memory plan"):
        runtime.memory_plan("tiny-gpu")


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A stand-in `google.colab` with drive.mount into a temp folder and userdata.get returning a token."""
    mount = tmp_path / "drive"
    google = types.ModuleType("google")
    colab = types.ModuleType("google.colab")
    drive = types.ModuleType("google.colab.drive")
    userdata = types.ModuleType("google.colab.userdata")
    drive.mount = lambda path: (mount / "MyDrive").mkdir(parents=True, exist_ok=True)
    userdata.get = lambda key: "hf_colab_secret" if key == "HF_TOKEN" else None
    colab.drive, colab.userdata = drive, userdata
    google.colab = colab
    for name, module in {"google": google, "google.colab": colab, "google.colab.drive": drive,
                         "google.colab.userdata": userdata}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(runtime, "DRIVE_MOUNT", mount)
    monkeypatch.setattr(runtime, "DRIVE_ROOT_ON_COLAB", mount / "MyDrive" / "human-video")
    return mount


def test_drive_root_on_colab(fake_colab, monkeypatch):
    monkeypatch.delenv("HV_ROOT", raising=False)
    assert runtime.is_colab()
    assert runtime.mount_drive(fake_colab)
    assert runtime.drive_root() == fake_colab / "MyDrive" / "human-video"


def test_drive_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("HV_ROOT", str(tmp_path / "x"))
    assert runtime.drive_root() == tmp_path / "x" and (tmp_path / "x").is_dir()


def test_drive_root_local_default(monkeypatch, tmp_path):
    monkeypatch.delenv("HV_ROOT", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runtime.drive_root() == tmp_path / ".cache" / "human-video"


def test_token_order(fake_colab, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert runtime.hf_token() == "hf_colab_secret"  # Colab secret first
    sys.modules["google.colab.userdata"].get = lambda key: None
    assert runtime.hf_token() == "hf_env"
    monkeypatch.delenv("HF_TOKEN")
    assert runtime.hf_token(prompt=False) is None
    out = capsys.readouterr()
    assert "hf_" not in out.out + out.err  # never printed


def test_environment_summary_reads_versions_without_importing_the_libraries():
    code = (
        "import sys, json; from helpers import runtime; s = runtime.environment_summary(); "
        "print(json.dumps([s, sorted(m for m in ('diffusers', 'transformers', 'onnxruntime') if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    summary, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported == []
    assert summary["diffusers"] == metadata.version("diffusers")
    assert summary["torch"] == metadata.version("torch") and summary["gpu"] is None


@pytest.mark.parametrize("cuda, requirement", [
    ("12.8", "onnxruntime-gpu>=1.20,<1.27"), ("13.0", "onnxruntime-gpu>=1.27"), ("11.8", None), (None, None),
])
def test_onnxruntime_gpu_build_follows_torchs_cuda(cuda, requirement):
    assert runtime.onnxruntime_gpu_requirement(cuda) == requirement


def test_gpu_onnxruntime_replaces_the_cpu_build_in_that_order(monkeypatch):
    import torch

    commands = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in runtime.install_gpu_onnxruntime(run=commands.append) and commands == []

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    real_version = metadata.version

    def version(name):
        if name == "onnxruntime-gpu":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", version)
    said = runtime.install_gpu_onnxruntime(run=commands.append)
    assert [c[3:5] for c in commands] == [["uninstall", "-q"], ["install", "-q"]]
    assert commands[0][-1] == "onnxruntime" and commands[1][-1] == "onnxruntime-gpu>=1.27"
    assert said == "onnxruntime: installed onnxruntime-gpu>=1.27 for CUDA 13.0"

    def no_gpu_wheel(command):  # e.g. the network drops: the CPU build comes back
        commands.append(command)
        if command[-1].startswith("onnxruntime-gpu"):
            raise RuntimeError("no network")

    commands.clear()
    said = runtime.install_gpu_onnxruntime(run=no_gpu_wheel)
    assert [c[-1] for c in commands] == ["onnxruntime", "onnxruntime-gpu>=1.27", "onnxruntime"]
    assert commands[-1][3] == "install" and said.startswith("onnxruntime: kept the CPU build")
