"""ID-Animator (identity-preserving human video) on stock diffusers AnimateDiff.

AnimateDiff v2 (SD1.5 UNet + ``MotionAdapter``) with ID-Animator's face adapter loaded as an IP-Adapter-Plus
(Resampler, 16 face tokens from CLIP ViT-H/14 features of an aligned face crop) plus a rank-128 LoRA on the spatial
cross-attentions; DDIM as the original configures it; optional sketch control through SparseCtrl.

>>> from helpers import face
>>> from helpers.pipelines.id_animator import load_id_animator_pipeline
>>> pipe = load_id_animator_pipeline()
>>> crop = face.prepare_face("me.jpg").image
>>> frames = pipe([crop], "a man reading a book, 8k uhd, high quality").frames[0]
"""

from .convert import (
    LORA_ADAPTER_NAME,
    NUM_FACE_TOKENS,
    FaceAdapterTarget,
    FaceAdapterWeights,
    animator_checkpoint_template,
    convert_animator_checkpoint,
    convert_motion_module_checkpoint,
    face_adapter_targets,
    read_checkpoint,
)
from .loading import (
    assemble_id_animator_pipeline,
    load_id_animator_pipeline,
    load_single_file_components,
    resolve_base_model,
)
from .modules import (
    FaceTokenMixer,
    PerFrameGroupNorm,
    install_face_token_mixer,
    make_ddim_scheduler,
    set_motion_groupnorm,
)
from .pipeline import (
    DEFAULT_NEGATIVE_PROMPT,
    OUTPUT_FPS,
    IDAnimatorPipeline,
    validate_generation_args,
    warn_if_prompt_truncated,
)
from .sketch import IDAnimatorSketchPipeline, validate_sketches

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "LORA_ADAPTER_NAME",
    "NUM_FACE_TOKENS",
    "OUTPUT_FPS",
    "FaceAdapterTarget",
    "FaceAdapterWeights",
    "FaceTokenMixer",
    "IDAnimatorPipeline",
    "IDAnimatorSketchPipeline",
    "PerFrameGroupNorm",
    "animator_checkpoint_template",
    "assemble_id_animator_pipeline",
    "convert_animator_checkpoint",
    "convert_motion_module_checkpoint",
    "face_adapter_targets",
    "install_face_token_mixer",
    "load_id_animator_pipeline",
    "load_single_file_components",
    "make_ddim_scheduler",
    "read_checkpoint",
    "resolve_base_model",
    "set_motion_groupnorm",
    "validate_generation_args",
    "validate_sketches",
    "warn_if_prompt_truncated",
]
