"""Keep nbclient (and papermill, which runs on it) from stalling on notebooks with an Output widget.

To behave like a browser, nbclient answers Output widget messages by *sending* on the kernel's shell socket while it
is *waiting* on that same socket for the cell's reply. Now and then the wait then misses the reply's arrival and
only wakes up when its time limit runs out: a cell that took a second is reported after the full cell timeout, or
never when there is no timeout (papermill's default). This is jupyter/nbclient#312 (open).

The cure here: wait on the shell socket in short slices, so a missed wake-up costs half a second at most.

>>> from helpers.testing.steady_client import steady_notebook_clients
>>> steady_notebook_clients(monkeypatch)   # every NotebookClient / papermill run in this test
"""

from __future__ import annotations

import time
from queue import Empty

SLICE_S = 0.5


def steady_shell_channel(kernel_client):
    """Make ``kernel_client.shell_channel.get_msg`` wait in short slices (same results, same time limit)."""
    channel = kernel_client.shell_channel
    receive = channel.get_msg

    async def get_msg(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                return await receive(timeout=SLICE_S if left is None else max(0.0, min(SLICE_S, left)))
            except Empty:
                if left is not None and left <= SLICE_S:
                    raise

    channel.get_msg = get_msg
    return kernel_client


def _steady_starters():
    """Replacements for NotebookClient's two kernel-client starters. Both are needed: ``execute()`` goes through
    ``async_start_new_kernel_client``, while papermill's ``setup_kernel()`` calls ``start_new_kernel_client``, a
    synchronous wrapper bound to the original coroutine when nbclient's class was made."""
    from jupyter_core.utils import run_sync
    from nbclient import NotebookClient

    start = NotebookClient.async_start_new_kernel_client

    async def start_steady(self, *args, **kwargs):
        return steady_shell_channel(await start(self, *args, **kwargs))

    start_steady._steady = True
    return start_steady, run_sync(start_steady)


def install_steady_clients() -> None:
    """For the whole process (e.g. ``make demo``): every NotebookClient gets a steady shell channel."""
    from nbclient import NotebookClient

    if getattr(NotebookClient.async_start_new_kernel_client, "_steady", False):
        return
    NotebookClient.async_start_new_kernel_client, NotebookClient.start_new_kernel_client = _steady_starters()


def steady_notebook_clients(monkeypatch) -> None:
    """For one test: every nbclient ``NotebookClient`` (papermill's included) gets a steady shell channel."""
    from nbclient import NotebookClient

    start_async, start_sync = _steady_starters()
    monkeypatch.setattr(NotebookClient, "async_start_new_kernel_client", start_async)
    monkeypatch.setattr(NotebookClient, "start_new_kernel_client", start_sync)
