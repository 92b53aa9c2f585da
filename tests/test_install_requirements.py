"""The install cell's dependency step (``runtime.install_requirements``), with a made-up distribution and pip
replaced by a recorder: only what is missing or below its floor is installed, torch/torchvision and every other
present package are held at their versions, a second run does nothing, and an upgrade of an imported package stops
the run with one line saying to restart (plus Colab's restart button). The real pip run is in tests/test_floor.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy  # noqa: F401  (imported: an upgrade of it needs a restart)
import pytest

from helpers import runtime
from helpers.errors import HelpersError

REQUIRES = ["torch", "torchvision", "diffusers>=0.39", "numpy>=2.0", "mediapy", "onnxruntime",
            "opencv-python-headless", "ipywidgets>=7.7.1", "hv-unimported>=2.0", 'pywin32; sys_platform == "win32"',
            'pytest; extra == "test"']


@pytest.fixture
def dist(tmp_path, monkeypatch):
    """A distribution ``hv-fake`` whose requirements are REQUIRES."""
    info = tmp_path / "site" / "hv_fake-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hv-fake\nVersion: 1.0\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in REQUIRES))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "hv-fake"


class Pip:
    def __init__(self, code=0, output=""):
        self.calls, self.constraints, self.code, self.output = [], [], code, output

    def __call__(self, command):
        self.calls.append(command)
        self.constraints.append(Path(command[command.index("-c") + 1]).read_text().split())
        return self.code, self.output


def versions(**found):
    return lambda name: found.get(name.lower().replace("_", "-"))


COLAB = dict(torch="2.9.0+cu126", torchvision="0.24.0+cu126", diffusers="0.39.0", numpy="2.0.2", mediapy="1.2.4",
             onnxruntime="1.23.0", **{"opencv-python-headless": "4.12.0.88", "hv-unimported": "2.0"}, ipywidgets="7.7.1")


def test_everything_present_does_nothing(dist):
    pip, said = Pip(), []
    assert runtime.install_requirements(dist, run=pip, version_of=versions(**COLAB), say=said.append) == []
    assert pip.calls == [] and said == ["packages: everything this project needs is installed; nothing to do"]


def test_installs_only_missing_and_below_floor_and_holds_the_rest(dist, monkeypatch):
    # a fresh runtime: diffusers not imported yet (other tests of this session may have imported it)
    monkeypatch.delitem(sys.modules, "diffusers", raising=False)
    found = dict(COLAB, diffusers="0.35.1", torch="1.0.0")  # an old torch still counts as present
    del found["mediapy"]
    pip, said = Pip(), []
    installed = runtime.install_requirements(dist, run=pip, version_of=versions(**found),
                                             say=lambda *a, **k: said.append(a[0]))

    assert installed == ["diffusers>=0.39", "mediapy"]
    [command] = pip.calls
    assert command[1:5] == ["-m", "pip", "install", "-q"] and command[-2:] == installed
    assert "--upgrade" not in command and "-U" not in command
    held = set(pip.constraints[0])
    assert {"torch==1.0.0", "torchvision==0.24.0+cu126", "numpy==2.0.2", "ipywidgets==7.7.1"} <= held
    assert not any(line.startswith(("diffusers", "mediapy", "pywin32", "pytest")) for line in held)
    assert said[0].startswith("installing diffusers>=0.39, mediapy") and said[1].startswith(" done in")


def test_missing_torch_is_installed_and_other_builds_of_a_module_count(dist):
    found = dict(COLAB, **{"onnxruntime-gpu": "1.23.2", "opencv-python": "4.12.0.88"})
    for name in ("torch", "onnxruntime", "opencv-python-headless"):
        del found[name]
    pip = Pip()
    assert runtime.install_requirements(dist, run=pip, version_of=versions(**found), say=lambda *a, **k: None) \
        == ["torch"]


def test_upgrading_an_imported_package_says_restart(dist, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: shown.append((obj, raw)))
    pip = Pip()
    with pytest.raises(SystemExit) as stop:
        runtime.install_requirements(dist, run=pip, version_of=versions(**dict(COLAB, numpy="1.26.4")),
                                     say=lambda *a, **k: None)
    assert str(stop.value) == ("Restart the runtime now (Runtime → Restart session), then run all cells again: "
                               "numpy was upgraded after this session had imported it.")
    assert shown == [({"application/vnd.colab-display-data+json": {"pip_warning": {"packages": ["numpy"]}}}, True)]


def test_upgrading_a_package_not_imported_needs_no_restart(dist):
    installed = runtime.install_requirements(dist, run=Pip(), version_of=versions(**{**COLAB, "hv-unimported": "1.0"}),
                                             say=lambda *a, **k: None)
    assert installed == ["hv-unimported>=2.0"]


def test_pip_failure_is_one_clear_error_with_pips_last_lines(dist):
    pip = Pip(code=1, output="Collecting x\nERROR: ResolutionImpossible: diffusers needs huggingface_hub>=9\n")
    with pytest.raises(HelpersError, match="pip could not install mediapy") as error:
        runtime.install_requirements(dist, run=pip, version_of=versions(**{k: v for k, v in COLAB.items()
                                                                          if k != "mediapy"}),
                                     say=lambda *a, **k: None)
    assert "ResolutionImpossible" in str(error.value)
