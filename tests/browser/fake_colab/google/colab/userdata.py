"""``google.colab.userdata``: Colab secrets, read from ``$HV_FAKE_COLAB_SECRETS`` (JSON)."""

import json
import os

from google.colab import _calls


class SecretNotFoundError(Exception):
    """Raised by Colab when no secret of that name exists."""


class NotebookAccessError(Exception):
    """Raised by Colab when the notebook was not granted access to the secret."""


def get(key):
    _calls.record("userdata.get", key=key)
    secrets = json.loads(os.environ.get("HV_FAKE_COLAB_SECRETS") or "{}")
    if key not in secrets:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return secrets[key]
