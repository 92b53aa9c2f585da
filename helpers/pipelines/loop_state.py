"""What a denoising loop needs to continue where it stopped: plain tensors and numbers, no files.

Every pipeline takes two optional arguments in the diffusers style:

- ``resume_from: LoopState | None``: continue after ``state.step`` completed steps (or in the middle of decoding)
  instead of starting from noise. The pipeline still runs its own preparation (text/image encoding, the noise of the
  conditioning), which is deterministic for the same inputs and seed; it then takes the latents, the scheduler's
  state and the generators' states from ``resume_from`` and skips the steps already done.
- ``on_state: Callable[[LoopState], None] | None``: called after every denoising step and after every decoded chunk
  with the live state (tensors are not copied: whoever keeps it must copy or write it before returning).

Continuing from a state gives the same numbers as an uninterrupted run: the scheduler snapshot holds every
attribute the scheduler changes while it steps (step index, multistep buffers, ...), and the generators continue
from the recorded position. Files, cadence and identity belong to the task layer (:mod:`helpers.resume`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

PHASES = ("denoise", "decode")


@dataclass
class LoopState:
    """A loop's position. ``step`` steps of ``total`` are done; ``latents`` are the loop's latents after them.

    ``extra`` holds whatever else the loop carries between steps (named tensors, e.g. a second latent stream);
    ``decoded`` the chunks already decoded (``phase == "decode"``), in order.
    """

    step: int
    total: int
    latents: torch.Tensor | None
    scheduler: dict = field(default_factory=dict)
    generators: list[torch.Tensor] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    decoded: list[torch.Tensor] = field(default_factory=list)
    phase: str = "denoise"

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")

    @classmethod
    def capture(cls, step: int, total: int, latents: torch.Tensor | None, *, scheduler=None, generator=None,
                extra: dict[str, Any] | None = None, decoded: list | None = None) -> LoopState:
        """A loop's live state: the scheduler's snapshot (when given), the generators' positions, and the phase
        from ``decoded`` (chunks decoded so far: "decode" once there is one)."""
        return cls(step=step, total=total, latents=latents,
                   scheduler=scheduler_snapshot(scheduler) if scheduler is not None else {},
                   generators=generator_states(generator), extra=dict(extra or {}), decoded=list(decoded or []),
                   phase="decode" if decoded else "denoise")


StateCallback = Callable[[LoopState], None]

_PLAIN = (int, float, bool, str, type(None))


def _snapshot_value(value: Any) -> tuple[bool, Any]:
    if isinstance(value, torch.Tensor):
        return True, value.detach().to("cpu", copy=True)
    if isinstance(value, _PLAIN):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_snapshot_value(v) for v in value]
        if all(ok for ok, _ in items):
            return True, [v for _, v in items]
    return False, None


def scheduler_snapshot(scheduler) -> dict:
    """Every attribute of a diffusers scheduler that stepping can change: tensors (copied to the CPU), numbers,
    strings, None, and lists of those (multistep buffers). The configuration is not included (it is the same)."""
    snapshot = {}
    for name, value in vars(scheduler).items():
        if name in ("_internal_dict", "config"):
            continue
        ok, copy = _snapshot_value(value)
        if ok:
            snapshot[name] = {"value": copy, "tuple": isinstance(value, tuple)}
    return snapshot


def _restore_value(saved: Any, current: Any) -> Any:
    if isinstance(saved, torch.Tensor):
        device = current.device if isinstance(current, torch.Tensor) else "cpu"
        return saved.to(device)
    if isinstance(saved, list):
        currents = list(current) if isinstance(current, (list, tuple)) and len(current) == len(saved) else []
        return [_restore_value(s, currents[i] if currents else None) for i, s in enumerate(saved)]
    return saved


def restore_scheduler(scheduler, snapshot: dict, device: torch.device | str | None = None) -> None:
    """Put a :func:`scheduler_snapshot` back (after ``set_timesteps``). Tensors go to the device of the attribute
    they replace (``device`` when the scheduler has none there yet)."""
    for name, entry in snapshot.items():
        current = getattr(scheduler, name, None)
        value = entry["value"]
        if isinstance(value, torch.Tensor) and not isinstance(current, torch.Tensor) and device is not None:
            value = value.to(device)
        else:
            value = _restore_value(value, current)
        if entry.get("tuple") and isinstance(value, list):
            value = tuple(value)
        setattr(scheduler, name, value)


def _generator_list(generator) -> list[torch.Generator]:
    if generator is None:
        return []
    return list(generator) if isinstance(generator, (list, tuple)) else [generator]


def generator_states(generator) -> list[torch.Tensor]:
    """The position of each generator (``torch.Generator`` or a list of them; none gives an empty list)."""
    return [g.get_state() for g in _generator_list(generator)]


def restore_generators(generator, states: list[torch.Tensor]) -> None:
    """Move the generators to the recorded positions (a mismatch in their number is a programming error)."""
    generators = _generator_list(generator)
    if len(generators) != len(states):
        raise ValueError(f"the saved state has {len(states)} generator states for {len(generators)} generators")
    for g, s in zip(generators, states):
        g.set_state(s)


def check_resume(state: LoopState, total: int, latents_shape: tuple[int, ...] | None = None) -> None:
    """Refuse a state that does not belong to this call (another step count or latent size)."""
    if state.total != total:
        raise ValueError(f"the saved state is for {state.total} steps, this run has {total}")
    if not 0 <= state.step <= total:
        raise ValueError(f"the saved state's step {state.step} is outside 0..{total}")
    if latents_shape is not None and state.latents is not None and tuple(state.latents.shape) != tuple(latents_shape):
        raise ValueError(f"the saved latents have shape {list(state.latents.shape)}, this run needs "
                         f"{list(latents_shape)}")


def resume_loop(state: LoopState, total: int, shape: tuple[int, ...] | None, *, scheduler=None, generator=None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Continue a loop from ``state`` (call after ``set_timesteps`` and the preparation): check it belongs to this
    call, put the scheduler (when given) and the generators where it left them, and return its latents as saved
    (already scaled; the caller moves them to its device and dtype)."""
    check_resume(state, total, shape)
    if scheduler is not None:
        restore_scheduler(scheduler, state.scheduler, device)
    restore_generators(generator, state.generators)
    return state.latents
