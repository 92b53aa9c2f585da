"""ControlNeXt-SVD (v1 and v2) on stock diffusers: pose encoder, UNet control hook, sliding-window pipeline.

>>> from helpers.pipelines.controlnext_svd import load_pipeline
>>> pipe = load_pipeline(version="v2")                      # packs under the Drive root, memory plan of this GPU
>>> video = pipe(reference_image, pose_frames).frames        # pose_frames[0] is the reference pose

Modules: ``encoder`` (the pose encoder), ``injection`` (the forward hook), ``windows`` (the window schedule),
``pipeline`` (the denoising loop), ``loading`` (files → pipeline, memory plans).
"""

from .encoder import OFFICIAL_V1, OFFICIAL_V2, ControlNeXtEncoder, config_from_state_dict, detect_version
from .injection import add_matched_control, inject_control
from .loading import (
    SVD_XT_UNET_CONFIG,
    ControlNeXtPaths,
    apply_memory_plan,
    load_components,
    load_controlnext,
    load_pipeline,
    load_unet,
    read_state_dict,
    unet_config,
)
from .pipeline import (
    DEFAULTS,
    ORIGINAL_TIME_IDS,
    ControlNeXtSVDOutput,
    ControlNeXtSVDPipeline,
    pose_frames_to_tensor,
    validate_call_args,
)
from .windows import Window, frame_counts, validate_window_args, window_schedule

__all__ = [
    "DEFAULTS", "OFFICIAL_V1", "OFFICIAL_V2", "ORIGINAL_TIME_IDS", "SVD_XT_UNET_CONFIG", "ControlNeXtEncoder",
    "ControlNeXtPaths", "ControlNeXtSVDOutput", "ControlNeXtSVDPipeline", "Window", "add_matched_control",
    "apply_memory_plan", "config_from_state_dict", "detect_version", "frame_counts", "inject_control",
    "load_components", "load_controlnext", "load_pipeline", "load_unet", "pose_frames_to_tensor", "read_state_dict",
    "unet_config", "validate_call_args", "validate_window_args", "window_schedule",
]
