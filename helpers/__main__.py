"""Command line: ``python -m helpers <task> [--param value ...]``, generated from each task's Params.

    python -m helpers --list
    python -m helpers pose_to_dance --help
    python -m helpers pose_to_dance --reference_image me.png --driving_video dance.mp4 --steps 25
    python -m helpers pose_to_dance --preset "<name>" --smoke
"""

from __future__ import annotations

import argparse
import sys

from helpers.errors import HelpersError
from helpers.tasks import available, load
from helpers.tasks.base import field_specs, params_from_dict, progress_or_default


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def join_numeric_values(argv: list[str], numeric: set[str]) -> list[str]:
    """``--guidance_scale -inf`` → ``--guidance_scale=-inf``: argparse takes a value that starts with ``-`` and does
    not look like a plain negative number (``-inf``, ``-1e-3``) for an option; bound to its option it is a value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in numeric and i + 1 < len(argv) and argv[i + 1].startswith("-") and _is_number(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def build_parser(task_name: str, task) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m helpers {task_name}",
                                     description=(task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else None,
                                     epilog="Numbers may be negative or written in exponent form: --name -1.5, "
                                            "--name 2e-3.")
    presets = getattr(task, "PRESETS", {})
    if presets:
        parser.add_argument("--preset", choices=sorted(presets), help="start from a named preset")
    for spec in field_specs(task.Params):
        kind = _bool if spec.type is bool else spec.type if spec.type in (int, float) else str
        extra = []
        if spec.min is not None or spec.max is not None:
            extra.append(f"range {spec.min}..{spec.max}")
        extra.append(f"default {spec.default!r}")
        parser.add_argument(f"--{spec.name}", type=kind, default=None, choices=spec.choices,
                            metavar=None if spec.choices else spec.name.upper(),
                            help=f"{spec.help} ({'; '.join(extra)})")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print("usage: python -m helpers <task> [--help] [--param value ...]\n\ntasks:")
        for name in available():
            print(f"  {name}")
        return 0
    name, rest = argv[0], argv[1:]
    try:
        task = load(name)
        numeric = {f"--{spec.name}" for spec in field_specs(task.Params) if spec.type in (int, float)}
        args = build_parser(name, task).parse_args(join_numeric_values(rest, numeric))
        values = dict(getattr(task, "PRESETS", {}).get(getattr(args, "preset", None) or "", {}))
        values.update({k: v for k, v in vars(args).items() if k != "preset" and v is not None})
        params = params_from_dict(task.Params, values)
        result = task.run(params, progress=progress_or_default(None))
    except HelpersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"video: {result.video_path}\nsidecar: {result.sidecar_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
