"""A minimal task module following the task pattern, for testing the form, the CLI and ``finish``."""

from dataclasses import dataclass, field

import numpy as np

from helpers.errors import InputError
from helpers.tasks.base import TaskParams, Timings, check_params, finish, param

NAME = "toy"


@dataclass
class Params(TaskParams):
    frames: int = field(default=4, metadata=param("Number of frames", min=1, max=16))
    brightness: float = field(default=0.5, metadata=param("Brightness", min=0.0, max=1.0))
    shape: str = field(default="square", metadata=param("What to draw", choices=["square", "bar"]))
    prompt: str = field(default="a square", metadata=param("Prompt", widget="textarea"))
    image: str = field(default="", metadata=param("An input image", widget="file"))
    fps: float = field(default=8.0, metadata=param("Output fps", min=1, max=60))
    loop: bool = field(default=False, metadata=param("Ping-pong"))
    width: int = field(default=32, metadata=param("Width", min=16, max=64, step=16, group="Advanced"))


PRESETS = {"bright bars": {"brightness": 1.0, "shape": "bar"}}


def validate(params: Params) -> None:
    check_params(params)
    if params.prompt.strip() == "fail":
        raise InputError("the prompt says fail: write another prompt")


def run(params: Params, *, progress=None):
    validate(params)
    timings = Timings()
    frames = np.zeros((params.frames, 32, params.width, 3), np.uint8)
    with timings.stage("draw"):
        for i in range(params.frames):
            if progress:
                progress("draw", i + 1, params.frames)
            frames[i, 8:24, : 8 + i] = int(255 * params.brightness)
    return finish(NAME, params, frames, params.fps, control=frames[:, :, ::-1], timings=timings,
                  meta={"weights": []})
