"""Helpers for the human-video notebooks.

The notebooks stay thin: every cell calls into this package. Each method lives in one module under
``helpers.pipelines``; each notebook has one task entry in ``helpers.tasks`` (Params -> run -> Result).
"""

__version__ = "0.1.0"
