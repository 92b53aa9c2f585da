"""Checking and normalising what a caller hands the zero-shot pipeline, before any model loads.

>>> check_call_inputs(prompt="a dancer", negative_prompt=None, poses=np.zeros((4, 64, 64, 3), np.uint8),
...                   options=ConsistencyOptions(), num_inference_steps=20)        # silent when all is well
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from helpers import media
from helpers.errors import InputError

from .options import ConsistencyOptions

#: Image sizes must be multiples of this: the VAE of SD2.1 downsamples by 8.
SIZE_MULTIPLE = 8
OUTPUT_TYPES = ("uint8", "float", "latent")


def as_frame_array(frames, name: str, *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames as ``[F, H, W, 3]`` uint8 RGB, from an array (``[F, H, W, C]``) or a list of images (arrays or PIL).

    With ``size = (width, height)`` frames of another size are centre-cropped to its aspect and resized. Objects
    holding their frames in ``.frames`` (:class:`PoseFrames`, ``media.Video``) are accepted too.
    """
    frames = getattr(frames, "frames", frames)
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        images = list(frames)
    elif isinstance(frames, np.ndarray) or not isinstance(frames, Sequence) or isinstance(frames, str):
        raise InputError(f"{name} must be a list of images or an array [frames, height, width, 3], "
                         f"not {type(frames).__name__}")
    else:
        images = list(frames)
    if not images:
        raise InputError(f"{name} is empty: give at least one frame")
    converted = [media.to_uint8_rgb(np.asarray(image)) for image in images]
    sizes = {image.shape[:2] for image in converted}
    if size is None and len(sizes) > 1:
        raise InputError(f"{name} frames have different sizes {sorted(sizes)}: resize them to one size")
    if size is not None:
        width, height = size
        converted = [image if image.shape[:2] == (height, width) else media.center_crop_resize(image, (width, height))
                     for image in converted]
    return np.stack(converted)


def as_mask_array(masks) -> np.ndarray:
    """Masks as ``[F, H, W]`` float32 in [0, 1]: bool, 0/1, 0-255 or float values; a trailing channel is averaged.

    >>> as_mask_array(np.full((2, 8, 8), 255, np.uint8)).max()
    np.float32(1.0)
    """
    try:
        array = np.stack([np.asarray(m) for m in masks]).astype(np.float32)
    except (TypeError, ValueError):
        raise InputError("masks must be a list of same-size images or an array [frames, height, width]") from None
    if array.ndim == 4:
        array = array.mean(axis=-1)
    if array.ndim != 3:
        raise InputError(f"masks must be [frames, height, width], not shape {list(array.shape)}")
    if array.max(initial=0.0) > 1.0:  # 0-255 masks (white = 255)
        array = array / 255.0
    return np.clip(array, 0.0, 1.0)


def check_call_inputs(*, prompt, negative_prompt, poses, options: ConsistencyOptions, num_inference_steps,
                      source_frames=None, masks=None, guidance_scale: float = 7.5,
                      controlnet_conditioning_scale: float = 1.0, output_type: str = "uint8",
                      size_multiple: int = SIZE_MULTIPLE) -> None:
    """Raise :class:`InputError` with a one-line fix for anything a call cannot run with. Loads no model.
    ``size_multiple``: what the pose size must divide by (the pipeline passes its loaded VAE's scale factor)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: describe the person and the scene")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise InputError("negative_prompt must be text (or None)")
    if not isinstance(options, ConsistencyOptions):
        raise InputError("options must be a ConsistencyOptions")
    options.check(num_inference_steps)
    if not isinstance(guidance_scale, (int, float)) or guidance_scale < 0:
        raise InputError(f"guidance_scale must be a number ≥ 0, not {guidance_scale!r}")
    if negative_prompt and guidance_scale <= 1:
        raise InputError(f"a negative prompt only acts with guidance_scale above 1 (it is {guidance_scale}): "
                         "raise guidance_scale or clear the negative prompt")
    if not isinstance(controlnet_conditioning_scale, (int, float)) or controlnet_conditioning_scale < 0:
        raise InputError(f"controlnet_conditioning_scale must be a number ≥ 0, not {controlnet_conditioning_scale!r}")
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, not {output_type!r}")

    pose_array = as_frame_array(poses, "poses")
    num_frames, height, width = pose_array.shape[:3]
    if height % size_multiple or width % size_multiple:
        raise InputError(f"pose frames are {width}×{height}: use a size that is a multiple of {size_multiple} "
                         "(e.g. 512×512), see prepare_pose_frames(..., size=...)")

    if options.needs_source and source_frames is None:
        raise InputError(f"latent_reference={options.latent_reference!r} builds on the source video: "
                         "pass source_frames (the video the poses came from)")
    if options.needs_source_frames(masked=masks is not None) and source_frames is None:
        raise InputError("masks take the source video's latents inside the mask (mask_mode='source_inside', the "
                         "original's): pass source_frames, or set mask_mode='reference_inside'")
    if source_frames is not None:
        if not options.needs_source_frames(masked=masks is not None):
            raise InputError("source_frames are only used by the latent references source, source_motion and "
                             "keyframe, and by masks with mask_mode='source_inside': pick one of them or leave "
                             "source_frames out")
        count = len(source_frames)
        if count != num_frames:
            raise InputError(f"source_frames has {count} frames but there are {num_frames} poses: pass one source "
                             "frame per pose")
    if masks is not None:
        if options.latent_reference == "off":
            raise InputError("masks limit where a latent reference acts: set latent_reference, or leave masks out")
        mask_array = as_mask_array(masks)
        if len(mask_array) != num_frames:
            raise InputError(f"there are {len(mask_array)} masks for {num_frames} poses: give one mask per frame")
        if mask_array.shape[1:] != (height, width):
            raise InputError(f"masks are {mask_array.shape[2]}×{mask_array.shape[1]} but the poses are "
                             f"{width}×{height}: give masks of the pose size")
