"""Pose front-end shared by the tasks: DWPose ONNX runner, keypoint format, alignment, OpenPose-style rendering.

Pose-to-dance (ControlNeXt-SVD v2), as the original prepares its control frames:

>>> from helpers import pose
>>> ref_image = pose.crop_reference_image(photo, 1024, 576)           # cover-resize + centre crop
>>> runner = pose.DWPoseRunner.from_weights()
>>> ref_pose = runner(ref_image)
>>> driving = pose.detect_video("dance.mp4", range(0, 480, 2), runner=runner)   # cached beside the video
>>> aligned, alignment = pose.align_poses(ref_pose, driving)          # InputError when nobody usable is found
>>> control = pose.draw_poses([ref_pose, *aligned])                   # [1+N, 1024, 576, 3] uint8, frame 0 = ref
>>> runner.close()                                                    # free the GPU before the video model loads

The OpenPose ControlNets (MuseV, SD2.1) use the annotator look:
``pose.draw_pose(p, 512, 512, style="openpose", face=False)`` (body + hands) or ``..., hands=False, face=False)``.
"""

from .align import ALIGNMENT_KEYPOINTS, PoseAlignment, align_poses, crop_reference_image, fit_pose_alignment
from .dwpose import DWPoseRunner
from .keypoints import BODY_KEYPOINT_NAMES, BODY_LIMBS, HAND_EDGES, VISIBILITY_THRESHOLD, PoseFrame
from .render import OPENPOSE_COLORS, draw_pose, draw_poses
from .video import detect_frames, detect_video

__all__ = [
    "ALIGNMENT_KEYPOINTS",
    "BODY_KEYPOINT_NAMES",
    "BODY_LIMBS",
    "HAND_EDGES",
    "OPENPOSE_COLORS",
    "VISIBILITY_THRESHOLD",
    "DWPoseRunner",
    "PoseAlignment",
    "PoseFrame",
    "align_poses",
    "crop_reference_image",
    "detect_frames",
    "detect_video",
    "draw_pose",
    "draw_poses",
    "fit_pose_alignment",
]
