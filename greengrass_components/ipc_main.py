"""The process shape both Greengrass components share: IPC client in, run until SIGTERM, close."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any, Protocol


class IpcComponent(Protocol):
    def start(self) -> None: ...
    def run(self, stop: threading.Event) -> None: ...
    def close(self) -> None: ...


def run_until_sigterm(build: Callable[[Any], IpcComponent]) -> None:
    """Connect to the nucleus, build the component on that client and run it until stopped."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

    ipc = GreengrassCoreIPCClientV2()
    component = build(ipc)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # the nucleus stops components with SIGTERM
    try:
        component.start()
        component.run(stop)
    finally:
        component.close()
        ipc.close()
