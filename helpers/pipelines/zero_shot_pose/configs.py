"""Full-size configurations of the models this method runs (Stable Diffusion 2.1 and its OpenPose ControlNet).

Used where no config file comes with the weights (a single-file ControlNet checkpoint) and by the GPU benchmark,
which builds random-weight models of the real size. Values are those of the published diffusers configs.

>>> SD21_CONTROLNET["cross_attention_dim"], SD21_UNET_768["sample_size"] * 8
(1024, 768)
"""

from __future__ import annotations

_SD21_BLOCKS = dict(
    act_fn="silu",
    attention_head_dim=[5, 10, 20, 20],  # 64-dimensional heads at every level
    block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=1024,  # OpenCLIP ViT-H text features
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    norm_eps=1e-5,
    norm_num_groups=32,
    only_cross_attention=False,
    use_linear_projection=True,  # SD2 uses linear (not 1x1 conv) projections into its transformers
)

#: SD2.1-768 (v-prediction): trained at 768 px; asks for upcast attention.
SD21_UNET_768 = dict(
    _SD21_BLOCKS,
    center_input_sample=False,
    dual_cross_attention=False,
    mid_block_scale_factor=1,
    out_channels=4,
    sample_size=96,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    upcast_attention=True,
)

#: SD2.1-base (epsilon): the same network, trained at 512 px.
SD21_UNET_512 = dict(SD21_UNET_768, sample_size=64, upcast_attention=False)

#: thibaud's SD2.1 ControlNets (diffusers layout): the SD2.1 encoder plus the 8x hint embedding.
SD21_CONTROLNET = dict(
    _SD21_BLOCKS,
    conditioning_embedding_out_channels=[16, 32, 96, 256],
    controlnet_conditioning_channel_order="rgb",
    mid_block_scale_factor=1,
    upcast_attention=False,
)

SD_VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=768,
    scaling_factor=0.18215,
    up_block_types=["UpDecoderBlock2D"] * 4,
)

#: The text tower of OpenCLIP ViT-H/14 as SD2 uses it: the last of its 24 layers dropped (penultimate features).
SD21_TEXT_ENCODER = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=512,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)

#: DDIM as shipped with SD2.1-768 (SD2.1-base ships PNDM with the same betas and epsilon prediction).
SD21_DDIM_768 = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
)
SD21_DDIM_512 = dict(SD21_DDIM_768, prediction_type="epsilon")
