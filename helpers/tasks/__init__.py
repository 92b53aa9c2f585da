"""One module per notebook. ``load(name)`` imports a task module lazily (heavy imports stay out of start-up)."""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS = {
    "pose_to_dance": "helpers.tasks.pose_to_dance",
    "text_image_to_video": "helpers.tasks.text_image_to_video",
    "id_preserving_video": "helpers.tasks.id_preserving_video",
    "zero_shot_pose_video": "helpers.tasks.zero_shot_pose_video",
    "video_to_video": "helpers.tasks.video_to_video",
}


def available() -> list[str]:
    """Task names whose module is present in this installation."""
    names = []
    for name, module in TASKS.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def load(name: str) -> ModuleType:
    from helpers.errors import InputError

    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; available: {', '.join(available())}")
    return importlib.import_module(TASKS[name])
