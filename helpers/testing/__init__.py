"""Tiny random-weight components in the real on-disk layout, for tests and SMOKE mode.

``common`` holds generic parts (offline CLIP tokenizer, CLIP encoders, SD UNet/VAE folders, ControlNet, motion
adapter, SVD components); each method adds its own packs in ``helpers/testing/<method>.py``.
"""
