"""The shared load policy: missing and mis-shaped keys stop a load, extra keys the original ignores are loaded past,
warned about once and recorded in the result sidecar."""

import json
import warnings

import pytest
import torch
import toy_task

from helpers import load_policy
from helpers.errors import StrictLoadError
from helpers.tasks import base

EXPECTED = {"a.weight": (4, 2), "a.bias": (4,)}


@pytest.fixture(autouse=True)
def _fresh_notes():
    load_policy.clear()
    yield
    load_policy.clear()


def test_exact_match_loads_without_warning_or_note():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_policy.enforce("m", EXPECTED, {"a.weight": torch.empty(4, 2), "a.bias": torch.empty(4)}) == []
    assert load_policy.notes() == {}


@pytest.mark.parametrize("ignore", [False, True])
def test_missing_and_mis_shaped_keys_are_fatal_whatever_the_setting(ignore):
    with pytest.raises(StrictLoadError) as err:
        load_policy.enforce("model x", EXPECTED, {"a.weight": (4, 3)}, ignore_unexpected=ignore)
    assert err.value.missing == ["a.bias"]
    assert err.value.mismatched == ["a.weight (4, 3) vs (4, 2)"]
    assert "model x" in str(err.value) and "a.bias" in str(err.value)


def test_unexpected_key_is_fatal_unless_the_original_ignores_it():
    found = {**EXPECTED, "extra.buffer": (1,)}
    with pytest.raises(StrictLoadError) as err:
        load_policy.enforce("strict model", EXPECTED, found)
    assert err.value.unexpected == ["extra.buffer"]
    with pytest.warns(load_policy.IgnoredKeysWarning, match=r"lenient model: left out 1 .*extra\.buffer") as seen:
        assert load_policy.enforce("lenient model", EXPECTED, found, ignore_unexpected=True) == ["extra.buffer"]
    assert len(seen) == 1
    assert load_policy.notes() == {"lenient model": {"ignored_keys": ["extra.buffer"],
                                                     "why": "the original loads this model non-strictly"}}


def test_a_predicate_picks_the_keys_that_may_be_ignored():
    found = {**EXPECTED, "step": (), "other.weight": (2,)}
    with pytest.raises(StrictLoadError) as err:
        load_policy.enforce("m", EXPECTED, found, ignore_unexpected=lambda key: key == "step")
    assert err.value.unexpected == ["other.weight"]


def test_loading_info_of_a_stock_load():
    with pytest.warns(load_policy.IgnoredKeysWarning):
        load_policy.enforce_loading_info("vae", {"missing_keys": [], "unexpected_keys": ["x"], "mismatched_keys": []})
    with pytest.raises(StrictLoadError, match="missing"):
        load_policy.enforce_loading_info("vae", {"missing_keys": ["y"], "unexpected_keys": [], "mismatched_keys": []})


def test_ignored_keys_reach_the_sidecar_and_are_forgotten_with_the_models(tmp_path):
    with pytest.warns(load_policy.IgnoredKeysWarning):
        load_policy.record_ignored("UNet unet.safetensors", ["global_step"], "the original ignores it")
    result = toy_task.run(toy_task.Params(output_dir=str(tmp_path)))
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["ignored_checkpoint_keys"] == {
        "UNet unet.safetensors": {"ignored_keys": ["global_step"], "why": "the original ignores it"}}
    base.clear_cache()
    assert load_policy.notes() == {}
    clean = json.loads(toy_task.run(toy_task.Params(output_dir=str(tmp_path))).sidecar_path.read_text())
    assert "ignored_checkpoint_keys" not in clean


def test_a_bare_mis_shaped_key_gets_its_shapes_from_what_transformers_logs():
    """transformers 4.x names mis-shaped keys without shapes in its loading info and logs the shapes instead."""
    import logging

    from helpers import load_policy as policy

    with policy.transformers_shape_lines() as lines:
        logging.getLogger("transformers.modeling_utils").warning(
            "Some weights were newly initialized because the shapes did not match:\n"
            "- emb.weight: found shape torch.Size([5, 2]) in the checkpoint and torch.Size([4, 2]) in the model "
            "instantiated\nYou should probably TRAIN this model")
    info = {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": ["emb.weight"]}
    with pytest.raises(StrictLoadError, match=r"emb\.weight: found shape torch\.Size\(\[5, 2\]\) in the checkpoint"):
        policy.enforce_loading_info("tiny text encoder", info, shape_lines=lines)
    assert not logging.getLogger("transformers.modeling_utils").handlers  # the collector is gone afterwards
