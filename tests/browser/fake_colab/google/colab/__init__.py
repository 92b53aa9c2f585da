"""A stand-in for Colab's ``google.colab`` package, for running the notebooks' Colab branches outside Colab.

Put ``tests/browser/fake_colab`` first on ``PYTHONPATH`` (``google`` stays a namespace package, so other
``google.*`` packages still import). Environment variables steer it:

- ``HV_FAKE_COLAB_DRIVE``: the folder ``drive.mount`` "mounts" (it gets a ``MyDrive`` folder);
- ``HV_FAKE_COLAB_SECRETS``: a JSON object of the secrets ``userdata.get`` knows (e.g. ``{"HF_TOKEN": "hf_…"}``);
- ``HV_FAKE_COLAB_LOG``: a file that receives one JSON line per call, so a test can tell which branches ran.
"""

from google.colab import _calls, drive, files, output, userdata  # noqa: F401

_calls.record("import google.colab")
