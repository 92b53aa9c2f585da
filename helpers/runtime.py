"""Where we run: Colab or not, the Drive root, the GPU actually granted, and a memory plan for it.

>>> from helpers import runtime
>>> plan = runtime.memory_plan()          # reads the GPU (or CPU) of this machine
>>> plan.dtype, plan.offload, plan.vae_decode_chunk
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import sys
from dataclasses import dataclass
from pathlib import Path

DRIVE_MOUNT = Path("/content/drive")
DRIVE_ROOT_ON_COLAB = DRIVE_MOUNT / "MyDrive" / "human-video"
DEFAULT_LOCAL_ROOT = Path("~/.cache/human-video")


def is_colab() -> bool:
    """True inside a Google Colab runtime (the ``google.colab`` module is importable)."""
    if "google.colab" in sys.modules:
        return True
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def mount_drive(mount_point: Path = DRIVE_MOUNT) -> bool:
    """Mount Google Drive on Colab (no-op elsewhere). Returns True when Drive is available."""
    if not is_colab():
        return False
    if (mount_point / "MyDrive").is_dir():
        return True
    from google.colab import drive

    drive.mount(str(mount_point))
    return (mount_point / "MyDrive").is_dir()


def drive_root() -> Path:
    """The folder that holds weights and outputs.

    ``$HV_ROOT`` wins; on Colab with Drive mounted it is ``/content/drive/MyDrive/human-video``; elsewhere
    ``~/.cache/human-video``. The folder is created.
    """
    env = os.environ.get("HV_ROOT")
    if env:
        root = Path(env).expanduser()
    elif is_colab() and (DRIVE_MOUNT / "MyDrive").is_dir():
        root = DRIVE_ROOT_ON_COLAB
    else:
        root = DEFAULT_LOCAL_ROOT.expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def outputs_dir(task: str) -> Path:
    """Where a task writes its videos and sidecars: ``<drive root>/outputs/<task>``."""
    path = drive_root() / "outputs" / task
    path.mkdir(parents=True, exist_ok=True)
    return path


def hf_token(prompt: bool = True) -> str | None:
    """The Hugging Face token: Colab secret ``HF_TOKEN``, then env ``HF_TOKEN``, then a hidden prompt.

    The token is never printed. The prompt only appears in an interactive session (not under CI or papermill).
    """
    if is_colab():
        try:
            from google.colab import userdata

            token = userdata.get("HF_TOKEN")
            if token:
                return token
        except Exception:  # secret missing or notebook access not granted: fall through to the other sources
            pass
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    if prompt and sys.stdin is not None and sys.stdin.isatty() and not os.environ.get("CI"):
        token = getpass.getpass("Hugging Face token (input hidden; Enter to skip): ").strip()
        return token or None
    return None


@dataclass(frozen=True)
class GPUInfo:
    name: str
    total_gb: float
    bf16: bool
    capability: tuple[int, int]


def gpu_info() -> GPUInfo | None:
    """The CUDA device actually granted, or None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return GPUInfo(
        name=props.name,
        total_gb=props.total_memory / 2**30,
        bf16=torch.cuda.is_bf16_supported(),
        capability=(props.major, props.minor),
    )


@dataclass(frozen=True)
class MemoryPlan:
    """How to run on this machine. Pipelines read these knobs; nothing here touches a model.

    - ``offload``: ``"none"`` (everything on the GPU), ``"model"`` (accelerate model CPU offload: one component on
      the GPU at a time) or ``"sequential"`` (layer by layer; slowest, smallest).
    - ``vae_decode_chunk``: frames decoded per VAE call.
    - ``ff_chunk``: feed-forward chunk size for UNets that support it (``None`` = off).
    - ``attention_slicing``: slice attention (only useful without SDPA memory-efficient kernels).
    """

    device: str
    dtype_name: str
    tier: str
    gpu_name: str
    gpu_total_gb: float
    offload: str = "none"
    vae_decode_chunk: int = 8
    ff_chunk: int | None = None
    attention_slicing: bool = False

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        where = f"{self.gpu_name} ({self.gpu_total_gb:.0f} GB)" if self.device == "cuda" else "CPU"
        ff = f", feed-forward chunk {self.ff_chunk}" if self.ff_chunk else ""
        return (
            f"{where} → {self.tier} plan: {self.dtype_name}, offload={self.offload}, "
            f"VAE decode {self.vae_decode_chunk} frames at a time{ff}"
        )


def plan_for(gpu: GPUInfo | None) -> MemoryPlan:
    """The memory plan for a given GPU (None = CPU). Pure: tests call it with made-up GPUs.

    Tiers by memory: ≤ 17 GB (T4 16 GB, V100 16 GB) offloads whole models and chunks the feed-forward; ≤ 25 GB (L4,
    A10G, 3090/4090) keeps models on the GPU but decodes in small chunks; larger cards (A100 40/80, H100, H200) run
    everything resident. fp16 everywhere on CUDA: every method here was released in fp16 or fp32.
    """
    if gpu is None:
        return MemoryPlan(
            device="cpu", dtype_name="float32", tier="cpu", gpu_name="CPU", gpu_total_gb=0.0,
            offload="none", vae_decode_chunk=2, ff_chunk=None,
        )
    common = dict(device="cuda", dtype_name="float16", gpu_name=gpu.name, gpu_total_gb=round(gpu.total_gb, 1))
    if gpu.total_gb < 12:
        return MemoryPlan(tier="small", offload="sequential", vae_decode_chunk=1, ff_chunk=1,
                          attention_slicing=True, **common)
    if gpu.total_gb <= 17:
        return MemoryPlan(tier="t4", offload="model", vae_decode_chunk=2, ff_chunk=1, **common)
    if gpu.total_gb <= 25:
        return MemoryPlan(tier="l4", offload="none", vae_decode_chunk=4, ff_chunk=1, **common)
    if gpu.total_gb <= 48:
        return MemoryPlan(tier="a100-40", offload="none", vae_decode_chunk=8, **common)
    return MemoryPlan(tier="large", offload="none", vae_decode_chunk=16, **common)


PRECISIONS = ("auto", "float16", "bfloat16", "float32")
HALF_PRECISIONS = ("float16", "bfloat16")


def with_precision(plan: MemoryPlan, precision: str = "auto", gpu: GPUInfo | None = None) -> MemoryPlan:
    """``plan`` computing in ``precision``: "auto" keeps the plan's own (float16 on CUDA, float32 on the CPU);
    "float16"/"bfloat16" run the models in half precision (also on the CPU, slowly: for tests and checks);
    "float32" for fidelity runs (twice the memory of float16). ``gpu`` (default: this machine's) is asked whether it
    has bfloat16; a GPU without it gets an ``InputError`` before any model loads."""
    from helpers.errors import InputError

    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto" or precision == plan.dtype_name:
        return plan
    if precision == "bfloat16" and plan.device == "cuda":
        gpu = gpu if gpu is not None else gpu_info()
        if gpu is not None and not gpu.bf16:
            raise InputError(f"{gpu.name} has no bfloat16 support: choose precision float16 (or auto)")
    return dataclasses.replace(plan, dtype_name=precision)


def vae_upcast(dtype, force_upcast: bool) -> bool:
    """Whether a VAE held in ``dtype`` should encode in float32: for both half types when its config sets
    ``force_upcast`` (float16 overflows there; bfloat16 keeps the range but has 8 bits of mantissa, too coarse for
    the conditioning latents). float32 VAEs never change."""
    import torch

    return bool(force_upcast) and dtype in (torch.float16, torch.bfloat16)


def memory_plan(override: str | None = None) -> MemoryPlan:
    """The plan for the GPU actually granted. ``override`` (or ``$HV_PLAN``) forces a tier: cpu, small, t4, l4,
    a100-40, large — e.g. to test the T4 plan on a big card."""
    override = override or os.environ.get("HV_PLAN")
    gpu = gpu_info()
    if override:
        sizes = {"small": 8.0, "t4": 15.0, "l4": 22.5, "a100-40": 40.0, "large": 80.0}
        if override == "cpu":
            return plan_for(None)
        if override not in sizes:
            from helpers.errors import InputError

            raise InputError(f"unknown memory plan {override!r}: use one of cpu, {', '.join(sizes)}")
        if gpu is None:
            gpu = GPUInfo(name="(no GPU)", total_gb=sizes[override], bf16=False, capability=(0, 0))
        else:
            gpu = dataclasses.replace(gpu, total_gb=sizes[override])
    return plan_for(gpu)


def peak_memory_gb() -> float:
    """Peak GPU memory allocated by torch since the last reset (0 on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return 0.0
    return torch.cuda.max_memory_allocated() / 2**30


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def environment_summary() -> dict:
    """Versions and hardware, for sidecars and bug reports.

    Versions come from the installed package metadata, so nothing heavy is imported just to name it.
    """
    import platform
    from importlib import metadata

    info = {"python": platform.python_version(), "colab": is_colab()}
    for name in ("torch", "diffusers", "transformers", "huggingface_hub", "onnxruntime", "onnxruntime-gpu"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    try:
        gpu = gpu_info()
    except ImportError:  # no torch at all
        gpu = None
    info["gpu"] = gpu.name if gpu else None
    return info


def gpu_selftest(size: int = 2048, repeats: int = 10) -> str:
    """A short fp16 matrix-multiply run on the GPU: proves CUDA works and reports its speed (one line)."""
    import time

    import torch

    gpu = gpu_info()
    if gpu is None:
        return "no CUDA GPU: runs will use the CPU (fine for SMOKE mode, far too slow for real videos)"
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    tflops = 2 * size**3 * repeats / (time.perf_counter() - t0) / 1e12
    free, total = torch.cuda.mem_get_info()
    return f"{gpu.name}: {tflops:.1f} TFLOP/s fp16, {free / 2**30:.1f} of {total / 2**30:.1f} GB free"


# onnxruntime-gpu wheels on PyPI: 1.20-1.26 are built for CUDA 12 (cuDNN 9), 1.27 and later for CUDA 13
_ONNXRUNTIME_GPU_FOR_CUDA = {"12": "onnxruntime-gpu>=1.20,<1.27", "13": "onnxruntime-gpu>=1.27"}


def onnxruntime_gpu_requirement(torch_cuda: str | None) -> str | None:
    """The onnxruntime-gpu requirement built for the CUDA major version torch uses (``torch.version.cuda``), or
    None where there is none (CPU torch, or a CUDA version without a matching wheel)."""
    if not torch_cuda:
        return None
    return _ONNXRUNTIME_GPU_FOR_CUDA.get(torch_cuda.split(".")[0])


def install_gpu_onnxruntime(run=None) -> str:
    """On a CUDA machine, swap the CPU ``onnxruntime`` for the ``onnxruntime-gpu`` build that matches torch's CUDA,
    so DWPose runs on the GPU. Meant for the notebooks' install cell, before anything has
    imported onnxruntime; returns one line saying what it did. ``run`` runs a command (default: subprocess)."""
    import subprocess
    from importlib import metadata

    run = run or (lambda command: subprocess.run(command, check=True))
    try:
        import torch
    except ImportError:
        return "onnxruntime: kept the CPU build (torch is not installed)"
    if not torch.cuda.is_available():
        return "onnxruntime: kept the CPU build (no CUDA GPU)"
    requirement = onnxruntime_gpu_requirement(torch.version.cuda)
    if requirement is None:
        return f"onnxruntime: kept the CPU build (no onnxruntime-gpu wheel for CUDA {torch.version.cuda})"
    try:
        metadata.version("onnxruntime-gpu")
        return "onnxruntime: the GPU build is already installed"
    except metadata.PackageNotFoundError:
        pass
    pip = [sys.executable, "-m", "pip"]
    # both distributions own the same `onnxruntime` folder: remove the CPU one first, never after
    run([*pip, "uninstall", "-q", "-y", "onnxruntime"])
    try:
        run([*pip, "install", "-q", requirement])
    except Exception as error:  # noqa: BLE001  (never leave the runtime without any onnxruntime)
        run([*pip, "install", "-q", "onnxruntime"])
        return f"onnxruntime: kept the CPU build (installing {requirement} failed: {error})"
    return f"onnxruntime: installed {requirement} for CUDA {torch.version.cuda}"


def prepare_onnxruntime_cuda() -> None:
    """Before opening a CUDA onnxruntime session: load torch first (its CUDA and cuDNN libraries are the ones
    onnxruntime-gpu should use) and let onnxruntime preload them where this version can. Any failure here only
    means onnxruntime falls back to the CPU, which the caller reports."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return
    try:
        import torch  # noqa: F401

        if hasattr(onnxruntime, "preload_dlls"):
            onnxruntime.preload_dlls()
    except Exception:  # noqa: BLE001  (best effort: the session creation reports a real failure)
        pass


# ---- the notebooks' install cell -------------------------------------------------------------------------------

PROJECT_DISTRIBUTION = "human-video-helpers"
# Colab's own builds, matched to its CUDA: installed when missing, never replaced
KEEP_AS_INSTALLED = ("torch", "torchvision")
# another build of the same import name already fills the requirement (both own one folder: never install both)
SAME_MODULE = {"onnxruntime": ("onnxruntime-gpu",),
               "opencv-python-headless": ("opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")}
RESTART_LINE = ("Restart the runtime now (Runtime → Restart session), then run all cells again: {names} {verb} "
                "upgraded after this session had imported {them}.")


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _requirements(distribution: str) -> list:
    from importlib import metadata

    from packaging.requirements import Requirement

    found = [Requirement(line) for line in metadata.requires(distribution) or []]
    return [r for r in found if not r.marker or r.marker.evaluate({"extra": ""})]


def requirements_to_install(distribution: str = PROJECT_DISTRIBUTION, version_of=None) -> list[tuple]:
    """The requirements of ``distribution`` that are missing or below their floor, as (Requirement, installed
    version or None). torch/torchvision count only when missing; another build of the same module (onnxruntime-gpu
    for onnxruntime, opencv-python for the headless one) counts as present."""
    version_of = version_of or _installed_version
    todo = []
    for requirement in _requirements(distribution):
        name = _canonical(requirement.name)
        have = version_of(requirement.name)
        if have is None and any(version_of(other) for other in SAME_MODULE.get(name, ())):
            continue
        if have is None:
            todo.append((requirement, None))
        elif name not in KEEP_AS_INSTALLED and not requirement.specifier.contains(have, prereleases=True):
            todo.append((requirement, have))
    return todo


def _run_quietly(command: list[str]) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(command, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def _imported_distributions(names: list[str]) -> list[str]:
    """Those of the distributions ``names`` that have a top-level module imported in this process."""
    from importlib import metadata

    modules_of: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(_canonical(dist), set()).add(module)
    return [name for name in names
            if any(module in sys.modules for module in modules_of.get(_canonical(name), {name}))]


def colab_restart_hint(packages: list[str]) -> None:
    """Colab's own "restart session" button (the one it shows after ``!pip install`` upgrades an imported package)."""
    try:
        from IPython.display import display
    except ImportError:
        return
    display({"application/vnd.colab-display-data+json": {"pip_warning": {"packages": packages}}}, raw=True)


def install_requirements(distribution: str = PROJECT_DISTRIBUTION, *, run=None, version_of=None,
                         say=print) -> list[str]:
    """Install what ``distribution`` needs and this runtime lacks: the notebooks' install cell calls it.

    Only missing packages and packages below their floor are installed; every other requirement already present
    (torch and torchvision always) is held at its installed version, so Colab's own builds are never replaced. One
    line says what happens; a second call finds nothing to do. When an upgraded package had already been imported,
    it shows Colab's restart button and stops the run with one line saying to restart the runtime, instead of a
    later obscure error. Returns the requirements it installed. ``run(command) -> (returncode, output)`` runs pip
    (tests pass a fake)."""
    import tempfile
    import time

    from helpers.errors import HelpersError

    version_of = version_of or _installed_version
    todo = requirements_to_install(distribution, version_of)
    if not todo:
        say("packages: everything this project needs is installed; nothing to do")
        return []
    wanted = [str(requirement) for requirement, _ in todo]
    todo_names = {_canonical(requirement.name) for requirement, _ in todo}
    held = [f"{r.name}=={version_of(r.name)}" for r in _requirements(distribution)
            if _canonical(r.name) not in todo_names and version_of(r.name)]
    say(f"installing {', '.join(wanted)} …", end="", flush=True)
    started = time.perf_counter()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("".join(f"{line}\n" for line in held))
    try:
        code, output = (run or _run_quietly)([sys.executable, "-m", "pip", "install", "-q", "-c", constraints.name,
                                              *wanted])
    finally:
        os.unlink(constraints.name)
    if code != 0:
        say(" failed")
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise HelpersError(f"pip could not install {', '.join(wanted)} next to this runtime's packages (held at "
                           f"their versions: {', '.join(held) or 'none'}); its last lines:\n{tail}")
    say(f" done in {time.perf_counter() - started:.0f}s")
    stale = _imported_distributions([r.name for r, have in todo if have is not None])
    if stale:
        colab_restart_hint(stale)
        many = len(stale) > 1
        raise SystemExit(RESTART_LINE.format(names=", ".join(stale), verb="were" if many else "was",
                                             them="them" if many else "it"))
    return wanted
