"""huggingface_hub from the floor (0.34) up: a download works whether or not ``hf_hub_download`` takes
``tqdm_class``, and an error that is not a network failure (such as a TypeError from an API this version lacks) is
never reported as "check the internet connection"."""

from __future__ import annotations

import huggingface_hub
import pytest
import requests
from huggingface_hub.utils import are_progress_bars_disabled

from helpers import sources
from helpers.errors import WeightsError
from helpers.registry import HubSource, Licence

SOURCE = HubSource("org/model", Licence("MIT", "https://example.org/licence"), files=("a.bin",), entry="a.bin")
REMOTE = {"size": 5, "sha256": None, "blob_id": None}


def _fake_download(record, *, accepts_tqdm_class: bool):
    def download(repo_id, filename, *, repo_type=None, revision=None, local_dir=None, token=None, endpoint=None):
        record.append({"bars_off": are_progress_bars_disabled()})
        (local_dir / filename).write_bytes(b"hello")
        return str(local_dir / filename)

    def download_with_tqdm_class(repo_id, filename, *, repo_type=None, revision=None, local_dir=None, token=None,
                                 endpoint=None, tqdm_class=None):
        record.append({"tqdm_class": tqdm_class})
        (local_dir / filename).write_bytes(b"hello")
        return str(local_dir / filename)

    return download_with_tqdm_class if accepts_tqdm_class else download


@pytest.mark.parametrize("progress", [True, False])
def test_download_without_tqdm_class_argument(tmp_path, monkeypatch, progress):
    record = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(record, accepts_tqdm_class=False))
    bars_off_before = are_progress_bars_disabled()

    sources.fetch_hub_file(SOURCE, "c0ffee", tmp_path, "a.bin", REMOTE, None, progress=progress)

    assert record == [{"bars_off": not progress or bars_off_before}]
    assert are_progress_bars_disabled() == bars_off_before, "the global progress-bar switch is put back"


@pytest.mark.parametrize("progress", [True, False])
def test_download_with_tqdm_class_argument(tmp_path, monkeypatch, progress):
    record = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_download(record, accepts_tqdm_class=True))
    sources.fetch_hub_file(SOURCE, "c0ffee", tmp_path, "a.bin", REMOTE, None, progress=progress)
    assert record == [{"tqdm_class": None if progress else sources.QuietTqdm}]


def test_a_type_error_is_not_blamed_on_the_connection(tmp_path, monkeypatch):
    def old_api(*args, **kwargs):
        raise TypeError("hf_hub_download() got an unexpected keyword argument 'tqdm_class'")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", old_api)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        sources.fetch_hub_file(SOURCE, "c0ffee", tmp_path, "a.bin", REMOTE, None)


@pytest.mark.parametrize("error", [requests.ConnectionError("refused"), TimeoutError("timed out"),
                                   requests.exceptions.ChunkedEncodingError("Connection broken")])
def test_a_network_failure_says_check_the_connection(tmp_path, monkeypatch, error):
    def unreachable(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(WeightsError, match="check the internet connection"):
        sources.fetch_hub_file(SOURCE, "c0ffee", tmp_path, "a.bin", REMOTE, None)


def test_hub_unreachable_without_an_answer_says_check_the_connection():
    """huggingface_hub 0.34 wraps a failed lookup (no DNS, no route) in LocalEntryNotFoundError, without a response."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    mapped = sources.hub_error(LocalEntryNotFoundError("cannot find the requested files"), SOURCE, None)
    assert isinstance(mapped, WeightsError) and "check the internet connection" in str(mapped)
    assert "answered None" not in str(mapped)


def test_hub_error_maps_only_network_failures():
    assert isinstance(sources.hub_error(OSError("unreachable"), SOURCE, None), WeightsError)
    bug = ValueError("bad argument")
    assert sources.hub_error(bug, SOURCE, None) is bug
