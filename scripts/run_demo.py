"""Run every notebook in SMOKE mode (tiny random-weight models, tiny sizes) and collect what they wrote.

    make demo        # or: .venv/bin/python scripts/run_demo.py

Executed notebooks go to outputs/notebooks/, videos and JSON sidecars to outputs/smoke/outputs/<task>/.
The setup notebook downloads its tiny packs from a local server on 127.0.0.1, like a real download.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    import papermill

    from helpers.testing.steady_client import install_steady_clients

    install_steady_clients()  # Output-widget replies can otherwise stall a cell (see that module)
    out = REPO / "outputs"
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    os.environ["HV_SMOKE_ROOT"] = str(out / "smoke")
    os.environ["HV_ROOT"] = str(out / "smoke" / "drive")
    os.environ.setdefault("MPLBACKEND", "Agg")
    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    failed = []
    for nb in notebooks:
        t0 = time.perf_counter()
        target = out / "notebooks" / nb.name
        try:
            papermill.execute_notebook(str(nb), str(target), parameters={"SMOKE": True}, cwd=str(nb.parent),
                                       kernel_name="python3", progress_bar=False,
                                       execution_timeout=900)
            status = "ok"
        except Exception as exc:  # keep going: report every notebook
            status = f"FAILED: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}"
            failed.append(nb.name)
        print(f"{nb.name:40s} {time.perf_counter() - t0:6.1f}s  {status}", flush=True)
    videos = sorted((out / "smoke" / "outputs").rglob("*.mp4"))
    print(f"\n{len(videos)} video(s) written:")
    for v in videos:
        print(f"  {v.relative_to(REPO)}")
    if failed:
        print(f"\nfailed: {', '.join(failed)} (executed copies with the error are in outputs/notebooks/)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
