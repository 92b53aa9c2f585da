"""Zero-shot pose-controlled video ("Controlled video generation without finetuning"), done right.

Stable Diffusion 2.1 + thibaud's SD2.1 OpenPose ControlNet generate one frame per pose; the frames are denoised in one
batch and tied together only by latent manipulation — no training, no motion module.

>>> import torch
>>> from helpers.pipelines.zero_shot_pose import (ConsistencyOptions, load_zero_shot_pipeline,
...                                               prepare_pose_frames)
>>> poses = prepare_pose_frames("poses/", size=(512, 512))             # renders, a pose video, or a folder
>>> pipe = load_zero_shot_pipeline()
>>> video = pipe("a golfer in a red polo shirt", poses.frames, negative_prompt="bad anatomy",
...              options=ConsistencyOptions(noise="shared", cross_frame_attention="first_and_previous",
...                                         latent_reference="first_frame", reference_steps=9),
...              generator=torch.Generator().manual_seed(1887)).frames

Modules: :mod:`.options` (the techniques' settings), :mod:`.techniques` (the named techniques), :mod:`.pipeline`
(the loop, resumable), :mod:`.attention` (cross-frame attention),
:mod:`.latents` (latent arithmetic at stated noise levels), :mod:`.poses` (pose inputs and detectors),
:mod:`.loading` (strict loading from the weights folder), :mod:`.configs` (full-size model configs).
"""

from __future__ import annotations

import importlib

# name → submodule. Loaded on first use, so checking inputs (``check_call_inputs``, ``ConsistencyOptions``) does not
# import torch or diffusers.
_EXPORTS = {
    "CrossFrameAttnProcessor": "attention",
    "cross_frame_attention": "attention",
    "check_call_inputs": "inputs",
    "load_zero_shot_pipeline": "loading",
    "native_size": "loading",
    "ConsistencyOptions": "options",
    "original_v2_cli": "options",
    "recommended": "options",
    "ZeroShotPoseOutput": "pipeline",
    "ZeroShotPosePipeline": "pipeline",
    "PoseFrames": "poses",
    "poses_from_video": "poses",
    "prepare_pose_frames": "poses",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ConsistencyOptions",
    "CrossFrameAttnProcessor",
    "PoseFrames",
    "ZeroShotPoseOutput",
    "ZeroShotPosePipeline",
    "check_call_inputs",
    "cross_frame_attention",
    "load_zero_shot_pipeline",
    "native_size",
    "original_v2_cli",
    "poses_from_video",
    "prepare_pose_frames",
    "recommended",
]
