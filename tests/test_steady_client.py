"""The notebook harness's steady shell channel (helpers.testing.steady_client)."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from queue import Empty
from types import SimpleNamespace

import nbformat
import pytest
from nbclient import NotebookClient

from helpers.testing import steady_client


def run(coroutine):
    """Run a coroutine in its own thread: earlier tests in the session (Playwright's sync API) may leave an event
    loop running in this one, where asyncio.run refuses."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class FakeChannel:
    """A shell channel whose message turns up only on the ``ready_on``-th wait (never when None)."""

    def __init__(self, ready_on=None):
        self.ready_on, self.waits = ready_on, []

    async def get_msg(self, timeout=None):
        self.waits.append(timeout)
        if self.ready_on is not None and len(self.waits) >= self.ready_on:
            return {"msg_type": "execute_reply"}
        await asyncio.sleep(timeout)
        raise Empty


def test_waits_in_short_slices_until_the_reply_is_there():
    channel = FakeChannel(ready_on=3)
    steady_client.steady_shell_channel(SimpleNamespace(shell_channel=channel))
    assert run(channel.get_msg(timeout=60))["msg_type"] == "execute_reply"
    assert len(channel.waits) == 3 and all(w <= steady_client.SLICE_S for w in channel.waits)


def test_keeps_the_callers_time_limit():
    channel = FakeChannel()
    steady_client.steady_shell_channel(SimpleNamespace(shell_channel=channel))
    start = time.monotonic()
    with pytest.raises(Empty):
        run(channel.get_msg(timeout=0.7))
    assert 0.65 < time.monotonic() - start < 2 and len(channel.waits) == 2


def test_both_kernel_client_starters_are_steady(monkeypatch):
    """papermill starts kernels through the synchronous starter, nbclient's execute() through the async one."""
    made = []

    async def fake_start(self):
        made.append(SimpleNamespace(shell_channel=FakeChannel(ready_on=1)))
        return made[-1]

    monkeypatch.setattr(NotebookClient, "async_start_new_kernel_client", fake_start)
    steady_client.steady_notebook_clients(monkeypatch)
    client = NotebookClient(nbformat.v4.new_notebook())
    for kc in (client.start_new_kernel_client(), run(client.async_start_new_kernel_client())):
        assert kc.shell_channel.get_msg.__qualname__.startswith("steady_shell_channel")
    assert len(made) == 2
