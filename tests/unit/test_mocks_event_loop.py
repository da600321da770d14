"""The mocks build the program's graph whichever worker thread an RPC lands on.

The Python SDK sends every RPC (RegisterResource, Invoke...) from a worker thread of the event
loop's default executor (``asyncio.get_running_loop().run_in_executor(None, do_rpc_call)``,
pulumi/runtime/resource.py and invoke.py, pulumi 3.272.0). Those threads have no event loop:
``pulumi.runtime.mocks.MockMonitor``'s RPCs call ``_ensure_event_loop()`` before they touch
asyncio ("needed when deserializing resource references", pulumi/runtime/mocks.py). The harness's
awsx stand-in ran the component's transforms in that thread before MockMonitor did so, and a
transform's ``DependencyResource`` parent creates an ``asyncio.Future()`` (pulumi/resource.py): on
a thread no earlier RPC had given a loop that raised "There is no current event loop in thread
'asyncio_N'", about 1 graph build in 6 on a loaded 2-core machine. A real engine runs transforms
through the program's callback server, on the program's loop (pulumi/runtime/_callbacks.py,
``_CallbackServicer``), and so does the harness now.

Here every RPC gets a brand-new worker thread (the worst case of the default executor's
scheduling, made deterministic), so the test fails every time the bug is there.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading

import pytest
from pulumi.runtime.sync_await import _ensure_event_loop

import program
from tests.unit import harness


class FreshThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted call on a new thread, named as asyncio names its workers."""

    _count = itertools.count()

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.threads: list[threading.Thread] = []

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting coroutine
                future.set_exception(err)

        thread = threading.Thread(target=run, name=f"asyncio_{next(self._count)}", daemon=True)
        self.threads.append(thread)
        thread.start()
        return future


@pytest.fixture
def fresh_thread_per_rpc():
    loop = _ensure_event_loop()  # the loop harness.run runs the program on
    previous = loop._default_executor
    executor = FreshThreadExecutor()
    loop.set_default_executor(executor)
    try:
        yield executor
    finally:
        loop._default_executor = previous
        for thread in executor.threads:
            thread.join(timeout=30)
        executor.shutdown(wait=True)


@pytest.mark.parametrize("stack,overrides", [("dev", {}), ("dev", {"natMode": "none"})])
def test_graph_builds_with_every_rpc_on_a_new_thread(fresh_thread_per_rpc, stack, overrides):
    run = harness.run(program.define_stack, harness.stack_config(stack, **overrides), stack)
    assert len(fresh_thread_per_rpc.threads) >= len(run.resources)  # every RPC really took a new thread
    run.one("awsx:ec2:Vpc")
    assert run.of_type("aws:ec2/subnet:Subnet")  # the stand-in reported the component's children
    # the component's transform (components/network.py, adopt) ran on each child: aliases kept
    assert any(c.aliases for c in run.recorder.awsx_children)
