"""Helpers for the real-browser and Colab-compatibility tests: a JupyterLab server, a page driver for notebooks
with a task form, the toy task notebook, and a fake ``google.colab`` package."""
