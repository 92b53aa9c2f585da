"""Size checks come from the loaded models (VAE scale factor × the UNet's down-sampling), not from a constant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import runtime
from helpers.errors import InputError
from helpers.pipelines.controlnext_svd import load_pipeline, validate_call_args
from helpers.pipelines.controlnext_svd.loading import SVD_XT_UNET_CONFIG
from helpers.pipelines.sizes import size_multiple
from helpers.testing.controlnext import TINY_UNET_CONFIG, write_tiny_controlnext_packs


def _configured(**config):
    class Model:
        pass

    model = Model()
    model.config = type("Config", (), config)
    return model


def test_the_multiple_follows_the_model_configuration():
    vae = _configured(block_out_channels=[128, 256, 512, 512])  # every released SD / SVD VAE
    assert size_multiple(vae) == 8
    assert size_multiple(vae, _configured(**SVD_XT_UNET_CONFIG)) == 64  # the full SVD-XT UNet: four levels
    assert size_multiple(vae, _configured(**TINY_UNET_CONFIG)) == 16  # a two-level UNet


def test_call_check_takes_the_models_multiple():
    settings = dict(frames_per_window=4, overlap=2, num_inference_steps=1, guidance_scale=3.0, decode_chunk_size=2)
    validate_call_args(5, height=96, width=64, size_multiple=16, **settings)
    with pytest.raises(InputError, match="multiples of 64 .* try 64×64"):
        validate_call_args(5, height=96, width=64, **settings)  # the full-size default
    with pytest.raises(InputError, match="multiples of 16"):
        validate_call_args(5, height=100, width=64, size_multiple=16, **settings)


def test_controlnext_pipeline_with_a_two_level_unet_runs_at_96_by_64(tmp_path):
    write_tiny_controlnext_packs(tmp_path, "v2")
    pipe = load_pipeline(tmp_path, version="v2", plan=runtime.memory_plan("cpu"))
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (96, 64, 3), dtype=np.uint8)
    poses = rng.integers(0, 256, (3, 96, 64, 3), dtype=np.uint8)
    out = pipe(reference, poses, height=96, width=64, frames_per_window=3, overlap=1, num_inference_steps=1,
               generator=torch.Generator().manual_seed(0))
    assert out.frames.shape == (3, 3, 96, 64) and torch.isfinite(out.frames).all()
    with pytest.raises(InputError, match="multiples of 16"):
        pipe(reference, poses, height=88, width=64, frames_per_window=3, overlap=1, num_inference_steps=1)
