"""What the video-to-video task needs in SMOKE mode and tests, beside the tiny MuseV packs of
:mod:`helpers.testing.musev`: the pose-to-video UNet and IP-Adapter projection, the tiny ControlNet of the chosen
condition (and the tiny fantasticmix base model where the pack offers that role), all in the real on-disk layout so
the real loaders read them; and a synthetic pose video that stands in for the original's pose-video examples.

>>> root = write_tiny_v2v_packs(tmp_path, "dwpose_body_hand")
>>> pose_video = synthetic_pose_video()           # dancer skeletons (body + hands, no face) on black
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from helpers.testing import musev as tiny

POSE_VIDEO_SIZE = (240, 320)  # (height, width) of the bundled dancer video it mirrors


def _missing(path: Path) -> bool:
    return not (path.is_file() or (path.is_dir() and any(path.iterdir())))


def write_tiny_v2v_packs(root: Path | str, condition: str = "dwpose_body_hand", *, seed: int = 20) -> Path:
    """Write (once) every ``musev`` pack role a video-to-video run with ``condition`` reads. Returns ``root``."""
    from helpers import registry
    from helpers.pipelines.musev.conditions import controlnet_role

    root = Path(tiny.write_tiny_musev_packs(root))
    roles = registry.PACKS[tiny.PACK].roles
    unet = tiny._entry_path(root, "unet_referencenet_pose")
    if not (unet / "diffusion_pytorch_model.bin").is_file():
        tiny.write_tiny_unet(unet, "musev_referencenet_pose", seed=seed)
    proj = tiny._entry_path(root, "ip_adapter_image_proj_pose")
    if _missing(proj):
        tiny.write_tiny_image_projection(proj, seed=seed + 1)
    role = controlnet_role(condition)
    controlnet = tiny._entry_path(root, role)
    if _missing(controlnet):
        tiny.write_tiny_controlnet(controlnet, seed=seed + 2 + sorted(roles).index(role))
    if "base_model_fantasticmix" in roles:
        base = tiny._entry_path(root, "base_model_fantasticmix")
        if _missing(base):
            tiny.write_tiny_base_model(base, seed=seed + 40)
    return root


def synthetic_pose_video(folder: Path | str | None = None, *, frames: int = 48, fps: float = 12.0) -> Path:
    """The bundled dancer's dance as a pose video (DWPose style, body + hands, no face, on black), drawn once:
    SMOKE mode's stand-in for a pose-video URL (``video_is_middle``)."""
    from helpers import media
    from helpers.pose.render import draw_pose
    from helpers.tasks.base import smoke_root
    from helpers.testing.pose import dancer_pose

    folder = Path(folder) if folder is not None else smoke_root() / "inputs" / "synthetic"
    path = folder / "dancer_poses.mp4"
    if not path.is_file():
        height, width = POSE_VIDEO_SIZE
        video = np.stack([
            draw_pose(dancer_pose(i / frames, height, width, size=0.8,
                                  centre_x=0.45 + 0.1 * math.sin(2 * math.pi * i / frames)), face=False)
            for i in range(frames)])
        folder.mkdir(parents=True, exist_ok=True)
        media.write_video(path, video, fps)
    return path
