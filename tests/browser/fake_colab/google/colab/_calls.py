"""The call log of the fake ``google.colab`` (one JSON object per line in ``$HV_FAKE_COLAB_LOG``)."""

import json
import os


def record(call: str, **details) -> None:
    path = os.environ.get("HV_FAKE_COLAB_LOG")
    if path:
        with open(path, "a") as log:
            log.write(json.dumps({"call": call, **details}) + "\n")
