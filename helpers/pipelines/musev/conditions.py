"""Condition videos for MuseV video-to-video: the images a ControlNet is given, one per source frame.

>>> from helpers.pipelines.musev import conditions
>>> list(conditions.CONDITIONS)
['dwpose_body_hand', 'canny', 'depth', 'lineart', 'softedge', 'hed']
>>> conditions.controlnet_role("canny")             # a role of the ``musev`` pack
'controlnet_canny'
>>> poses = conditions.render_condition_frames("dwpose_body_hand", frames, smoke=False)   # uint8 (T, H, W, 3)

What the original does with each source frame (already cropped and resized to the video size,
:func:`.preprocess.crop_resize_video_frames`): its condition processor crops and resizes the frame once more with its
usual box (last row and column dropped, PIL's default bicubic filter), then runs the detector with ``detect_resolution``
and ``image_resolution`` = the shorter video side, so the map comes out at the video size. Reproduced here.

* ``dwpose_body_hand`` (the README's condition): whole-body keypoints from our DWPose runner (:mod:`helpers.pose`, the
  same detector as pose-to-dance), drawn as the ControlNet annotator draws them: body limbs and hands on black, no face
  (:func:`helpers.pose.render.draw_pose` with ``style="openpose"``), for ``lllyasviel/control_v11p_sd15_openpose``.
  The original runs DWPose through mmdet/mmpose (person boxes above 0.5); ours is the ONNX front-end of
  :mod:`helpers.pose.dwpose` (boxes above 0.3). A frame where nobody is found is drawn from the runner's whole-image
  guess, as the original does; a video where nobody is found in any frame is refused (``InputError``).
* ``canny``, ``depth`` (MiDaS DPT-Hybrid), ``lineart`` (the coarse generator, as the original asks for), ``softedge``
  and ``hed`` (both HED soft edges): ``controlnet-aux``'s processors with their default settings, on the annotator
  weights of ``lllyasviel/Annotators`` (optional roles of the ``musev`` pack). ``hed`` is the original's pairing (HED with
  ``lllyasviel/sd-controlnet-hed``, ControlNet 1.0); ``softedge`` pairs the same maps with the 1.1 soft-edge ControlNet
  trained on them.

SMOKE mode runs every processor's own code on random weights, written nowhere: the HED network and the line-art
generator are built at their (fixed) real size; the MiDaS DPT-Hybrid network (123 M parameters, a timm ViT-B/ResNet-50
hybrid that takes about 20 s to build on a CPU) is the one part replaced, by a tiny random convolution with the same
input and output, so the detector's pre- and post-processing still run. The DWPose runner uses the tiny SMOKE pack.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from helpers.errors import InputError
from helpers.pipelines.musev.preprocess import crop_box

__all__ = ["CONDITIONS", "ConditionSpec", "controlnet_role", "processor_view", "render_condition_frames"]

PACK = "musev"


@dataclass(frozen=True)
class ConditionSpec:
    name: str
    what: str  # one line for forms and errors
    controlnet_role: str  # role of the ``musev`` pack holding its SD1.5 ControlNet
    annotator_role: str | None = None  # role of the ``musev`` pack holding the processor's weights (None: none/DWPose)
    processor: str | None = None  # controlnet-aux class; None = our DWPose runner
    settings: dict = field(default_factory=dict)  # processor arguments the original passes besides the resolutions
    pose: bool = False  # needs a person in the video


CONDITIONS: OrderedDict[str, ConditionSpec] = OrderedDict((c.name, c) for c in (
    ConditionSpec("dwpose_body_hand", "DWPose body and hands (no face) on black, for the OpenPose ControlNet",
                  "controlnet_openpose", pose=True),
    ConditionSpec("canny", "Canny edges (thresholds 100/200)", "controlnet_canny", processor="CannyDetector"),
    ConditionSpec("depth", "MiDaS DPT-Hybrid depth", "controlnet_depth", "annotator_depth", "MidasDetector"),
    ConditionSpec("lineart", "line art (coarse generator)", "controlnet_lineart", "annotator_lineart",
                  "LineartDetector", {"coarse": True}),
    ConditionSpec("softedge", "HED soft edges, for the ControlNet 1.1 soft-edge model", "controlnet_softedge",
                  "annotator_hed", "HEDdetector"),
    ConditionSpec("hed", "HED soft edges, for the ControlNet 1.0 HED model (the original's pairing)",
                  "controlnet_hed", "annotator_hed", "HEDdetector"),
))


def _spec(name: str) -> ConditionSpec:
    if name not in CONDITIONS:
        raise InputError(f"unknown condition {name!r}: choose one of {', '.join(CONDITIONS)}")
    return CONDITIONS[name]


def controlnet_role(name: str) -> str:
    """The ``musev`` pack role holding the ControlNet of condition ``name``."""
    return _spec(name).controlnet_role


def processor_view(frame: np.ndarray) -> np.ndarray:
    """What the original's condition processor looks at: the frame cropped with its usual box and resized back to its
    own size with PIL's default (bicubic) filter."""
    from PIL import Image

    height, width = frame.shape[:2]
    x0, y0, x1, y1 = crop_box(height, width, height, width)
    image = Image.fromarray(np.ascontiguousarray(frame)).crop((x0, y0, x1, y1))
    return np.asarray(image.resize((width, height), resample=Image.Resampling.BICUBIC), dtype=np.uint8)


def render_condition_frames(name: str, frames: np.ndarray, *, smoke: bool, root: str | Path | None = None,
                            detect=None) -> np.ndarray:
    """uint8 RGB ``(T, H, W, 3)`` source frames (at the video size) → uint8 ``(T, H, W, 3)`` condition frames.

    ``root``: where the weights are looked up (default: the run's weights root). ``detect``: an ``image → PoseFrame``
    callable replacing the DWPose runner (tests). ``InputError`` for an unknown condition, bad frames, or (pose
    conditions) a video where nobody is found."""
    spec = _spec(name)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"condition frames must be uint8 RGB (T, H, W, 3), got {frames.dtype} {frames.shape}")
    views = [processor_view(f) for f in frames]
    if spec.pose:
        return _render_poses(views, smoke=smoke, root=root, detect=detect)
    return _render_with_controlnet_aux(spec, views, smoke=smoke, root=root)


# ------------------------------------------------------------------------------------------------------------ poses


def _render_poses(views: list[np.ndarray], *, smoke: bool, root, detect) -> np.ndarray:
    from helpers.pose.render import draw_pose

    runner = None
    if detect is None:
        runner = _dwpose_runner(smoke, root)
        detect = runner
    try:
        poses = [detect(view) for view in views]
    finally:
        if runner is not None:
            runner.close()
    if not any(p.detected and p.num_people > 0 and p.body_visible.any() for p in poses):
        raise InputError(f"no person was found in any of the {len(views)} source frames: a pose condition needs a "
                         "visible person (or give a rendered pose video and mark it as one)")
    height, width = views[0].shape[:2]
    return np.stack([draw_pose(p, height, width, style="openpose", face=False) for p in poses])


def _dwpose_runner(smoke: bool, root):
    """Our DWPose runner: from the run's weights root (SMOKE: the tiny pack, written once) or from ``root``."""
    if root is None:
        from helpers.tasks.inputs import open_dwpose

        return open_dwpose(smoke)[0]
    from helpers.pose import DWPoseRunner

    if smoke:
        from helpers.pose.dwpose import DETECTOR_FILE, DETECTOR_ROLE, WEIGHTS_PACK
        from helpers.testing.pose import write_tiny_dwpose_pack

        if not (Path(root) / "models" / WEIGHTS_PACK / DETECTOR_ROLE / DETECTOR_FILE).is_file():
            write_tiny_dwpose_pack(root)
    return DWPoseRunner.from_weights(root=root)


# ---------------------------------------------------------------------------------------------- controlnet-aux


@contextlib.contextmanager
def _quiet():
    """controlnet-aux announces optional packages it does not need here (mediapipe, ...) on import."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _render_with_controlnet_aux(spec: ConditionSpec, views: list[np.ndarray], *, smoke: bool, root) -> np.ndarray:
    processor = _processor(spec, smoke=smoke, root=root)
    height, width = views[0].shape[:2]
    resolution = min(height, width)
    out = []
    with _quiet():
        for view in views:
            from PIL import Image

            result = processor(Image.fromarray(view), detect_resolution=resolution, image_resolution=resolution,
                               output_type="np", **spec.settings)
            result = np.asarray(result, dtype=np.uint8)
            if result.ndim == 2:
                result = np.repeat(result[..., None], 3, axis=2)
            if result.shape[:2] != (height, width):  # sizes that are not multiples of 64: the processor rounds
                result = np.asarray(Image.fromarray(result).resize((width, height), Image.Resampling.BICUBIC))
            out.append(result)
    return np.stack(out)


def _processor(spec: ConditionSpec, *, smoke: bool, root):
    with _quiet():
        if spec.processor == "CannyDetector":
            from controlnet_aux.canny import CannyDetector

            return CannyDetector()
        if smoke:
            return _smoke_processor(spec.processor)
        import torch

        from helpers import weights

        path = weights.resolve(PACK, spec.annotator_role, root)
        folder, filename = str(path.parent), path.name
        if spec.processor == "HEDdetector":
            from controlnet_aux.hed import HEDdetector

            processor = HEDdetector.from_pretrained(folder, filename=filename)
        elif spec.processor == "LineartDetector":
            from controlnet_aux.lineart import LineartDetector

            processor = LineartDetector.from_pretrained(folder)
        elif spec.processor == "MidasDetector":
            from controlnet_aux.midas import MidasDetector

            processor = MidasDetector.from_pretrained(folder, filename=filename)
        else:
            raise ValueError(f"no processor for {spec.processor!r}")
        # on the GPU when there is one, as the original (the processors follow their weights' device)
        return processor.to("cuda") if torch.cuda.is_available() else processor


@functools.cache
def _smoke_processor(name: str):
    """The controlnet-aux processor on random weights (module docstring); deterministic, built once per process."""
    import torch

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        if name == "HEDdetector":
            from controlnet_aux.hed import ControlNetHED_Apache2, HEDdetector

            return HEDdetector(ControlNetHED_Apache2().float().eval())
        if name == "LineartDetector":
            from controlnet_aux.lineart import Generator, LineartDetector

            return LineartDetector(Generator(3, 1, 3).eval(), Generator(3, 1, 3).eval())
        if name == "MidasDetector":
            from controlnet_aux.midas import MidasDetector

            return MidasDetector(_tiny_depth_network())
    finally:
        torch.random.set_rng_state(generator_state)
    raise ValueError(f"no SMOKE processor for {name!r}")


def _tiny_depth_network():
    """Stands in for MiDaS DPT-Hybrid in SMOKE mode: (1, 3, H, W) in [-1, 1] → (1, H, W) non-negative depth."""
    import torch

    class TinyDepth(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            with torch.no_grad():
                return torch.relu(self.conv(x))[:, 0] + 1e-3

    return TinyDepth().eval()
