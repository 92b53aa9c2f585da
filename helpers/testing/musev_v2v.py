"""What the video-to-video task needs in SMOKE mode and tests: the tiny MuseV packs of :mod:`helpers.testing.musev`
with the pose-to-video UNet and IP-Adapter projection and the tiny ControlNet of the chosen condition, plus a tiny
fantasticmix base model, all in the real on-disk layout so the real loaders read them; and a synthetic pose video that
stands in for the original's pose-video examples.

>>> root = write_tiny_v2v_packs(tmp_path, "dwpose_body_hand")
>>> pose_video = synthetic_pose_video()           # dancer skeletons (body + hands, no face) on black
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from helpers.testing import musev as tiny

POSE_VIDEO_SIZE = (240, 320)  # (height, width) of the bundled dancer video it mirrors
FANTASTICMIX = "base_model_fantasticmix"  # the README's video-to-video base model (an optional musev role)


def write_tiny_v2v_packs(root: Path | str, condition: str = "dwpose_body_hand", *, seed: int = 0) -> Path:
    """Write (once) every ``musev`` pack role a video-to-video run with ``condition`` reads: the tiny MuseV packs
    with the pose-to-video roles and the condition's ControlNet, and the fantasticmix base model where the pack
    offers that role. Returns ``root``."""
    from helpers import registry
    from helpers.pipelines.musev.conditions import controlnet_role

    root = Path(tiny.write_tiny_musev_packs(root, pose=True, controlnets=(controlnet_role(condition),), seed=seed))
    if FANTASTICMIX in registry.PACKS[tiny.PACK].roles:
        base = tiny._entry_path(root, FANTASTICMIX)
        if not (base.is_dir() and any(base.iterdir())):
            tiny.write_tiny_base_model(base, seed=seed + 40)
    return root


def synthetic_pose_video(folder: Path | str | None = None, *, frames: int = 48, fps: float = 12.0) -> Path:
    """The bundled dancer's dance as a pose video (body + hands, no face, on black, as the ``dwpose_body_hand``
    condition draws it), drawn once: SMOKE mode's stand-in for a pose-video URL (``video_is_middle``)."""
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
                                  centre_x=0.45 + 0.1 * math.sin(2 * math.pi * i / frames)),
                      style="openpose", face=False)
            for i in range(frames)])
        folder.mkdir(parents=True, exist_ok=True)
        media.write_video(path, video, fps)
    return path
