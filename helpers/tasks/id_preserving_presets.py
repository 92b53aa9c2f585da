"""The original ID-Animator repository's example inputs and prompts, as presets of the ID-preserving video task.

Its inference script (infer.py, the published run) and the examples of its demo app (app.py, which appends the
Space suffixes); the README's sketch demos publish no prompt, so those two prompts are ours. The pictures are fetched
from GitHub on first use (:func:`helpers.tasks.inputs.fetch_input`), at the commit the published code comes from.
"""

from __future__ import annotations

# The original repository's example inputs, at the commit its published code comes from.
EXAMPLES = "https://raw.githubusercontent.com/ID-Animator/ID-Animator/0170eed6893a22db628f2d54255e9ddeb9043aa3"
DEMO, REF = f"{EXAMPLES}/ID-Animator/demo", f"{EXAMPLES}/__assets__/ref"

# infer.py, the published run: Realistic Vision V6.0 B1, face scale 0.8, seed 4993.
DEFAULT_FACE = f"{DEMO}/lecun.png"
DEFAULT_PROMPT = "Iron Man soars through the clouds, his repulsors blazing"
NEGATIVE_PROMPT = (
    "semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime, text, close up, cropped, out of frame, worst "
    "quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, poorly "
    "drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, extra "
    "limbs, cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, extra arms, extra "
    "legs, fused fingers, too many fingers, long neck")
NEGATIVE_PROMPT_EYES = (
    "(deformed iris, deformed pupils, semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime), text, "
    "cropped, out of frame, worst quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra "
    "fingers, mutated hands, poorly drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad "
    "anatomy, bad proportions, extra limbs, cloned face, disfigured, gross proportions, malformed limbs, missing arms, "
    "missing legs, extra arms, extra legs, fused fingers, too many fingers, long neck, UnrealisticDream")
NEGATIVE_PROMPT_SHORT = "worst quality, low quality, jpeg artifacts, ugly, duplicate, blurry, long neck"

PRESETS: dict[str, dict] = {
    "community model · Iron Man (infer.py, the published run)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT, base_model="community",
        face_scale=0.8, seed=4993, space_suffixes=False),
    "plain SD1.5 base · Iron Man (compare with the community model)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT, base_model="sd15",
        face_scale=0.8, seed=4993, space_suffixes=False),
    "recontextualization · reading by the window (demo app)": dict(
        face_image=f"{DEMO}/ann.png",
        prompt="A young girl with a passion for reading, curled up with a book in a cozy nook near a window",
        negative_prompt=NEGATIVE_PROMPT + ",", face_scale=1.0, seed=8290, space_suffixes=True),
    "recontextualization · beach at sunset (demo app)": dict(
        face_image=f"{DEMO}/zendaya.png",
        prompt="A woman on a serene beach at sunset, the sky ablaze with hues of orange and purple.",
        negative_prompt=NEGATIVE_PROMPT, face_scale=1.0, seed=5992, space_suffixes=True),
    "recontextualization · chef (demo app)": dict(
        face_image=f"{DEMO}/qianlong.png",
        prompt="A chef in a white apron, complete with a toqueblanche, garnishing a gourmet dish",
        negative_prompt=NEGATIVE_PROMPT_EYES, face_scale=0.8, seed=1844, space_suffixes=True),
    "recontextualization · pink and purple hair (demo app)": dict(
        face_image=f"{DEMO}/augustus.png", prompt="A man with dyed pink and purple hair, styledin a high ponytail",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.7, seed=870, space_suffixes=True),
    "community model · Iron Man (demo app)": dict(
        face_image=DEFAULT_FACE, prompt=DEFAULT_PROMPT, negative_prompt=NEGATIVE_PROMPT_SHORT, face_scale=0.7,
        seed=4993, space_suffixes=True),
    "identity mixing · two faces, guitarist (demo app)": dict(
        face_image=f"{DEMO}/lecun.png", second_face_image=f"{DEMO}/ann.png", mix_weight=0.5, identity_mixing="mean",
        prompt="A musician playing a guitar, fingers deftly moving across the strings, producing a soulful melody",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.9, seed=1897, space_suffixes=True),
    "sketch image · README demo": dict(
        face_image=f"{REF}/fbb.png", sketch_mode="one sketch", sketch_image=f"{REF}/sketch.png", sketch_frames="0",
        prompt="a woman with her hair tied up, wearing a necklace, smiling at the camera",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.8, seed=4993),
    "sketch sequence · README demo": dict(
        face_image=f"{REF}/fbb.png", sketch_mode="sequence", sketch_image=f"{REF}/sketch_sequence.png",
        sketch_grid="2x2", sketch_frames="", prompt="a person playing an acoustic guitar by the sea, clouds in the sky",
        negative_prompt=NEGATIVE_PROMPT, face_scale=0.8, seed=4993),
}
