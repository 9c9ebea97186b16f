"""Pieces of a fake Greengrass nucleus, for tests that drive the SDK's real V2 IPC client.

`GreengrassCoreIPCClientV2(client=...)` accepts the V1 operation factory; a fake nucleus hands out
FakeOperations that answer the way the eventstream RPC operations do.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable


def done(result=None, error: Exception | None = None) -> concurrent.futures.Future:
    """A future that has already finished, with `result` or raising `error`."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future


class FakeOperation:
    """One IPC operation: records its request; `respond(request)` gives the future of its response."""

    def __init__(self, respond: Callable[[object], concurrent.futures.Future], stream_handler=None) -> None:
        self.respond = respond
        self.stream_handler = stream_handler
        self.request = None
        self.response: concurrent.futures.Future | None = None
        self.closed = False

    def activate(self, request) -> concurrent.futures.Future:
        self.request = request
        self.response = self.respond(request)
        return done()

    def get_response(self) -> concurrent.futures.Future:
        return self.response

    def close(self) -> concurrent.futures.Future:
        self.closed = True
        return done()
