"""The com.edgeloop.Gateway Greengrass component: local samples in, IoT Core telemetry out.

Sensor adapters and the model runner publish `{"samples": [[metric, time_ms, value], ...]}` on the
local pub/sub topic names.LOCAL_PUBSUB_SAMPLES_TOPIC; this process buffers them durably and a
background Publisher sends them through the nucleus (IPC mqttproxy) to the thing's telemetry topic.
The recipe passes the configuration on the command line (see recipes/com.edgeloop.Gateway.yaml).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from pathlib import Path
from typing import Any

from edgeloop.greengrass_components.ipc_main import run_until_sigterm
from edgeloop.greengrass_components.local_samples import local_sample_rows
from edgeloop.schemas import load_use_case, names
from edgeloop.schemas.model import Precision, architecture_of_machine

from .config import GatewayConfig
from .flush_policy import FlushPolicy
from .publisher import Publisher
from .transport import GreengrassIpcTransport, TransportError
from .validation import SampleValidator, append_validated

log = logging.getLogger(__name__)


class GreengrassGateway:
    def __init__(self, config: GatewayConfig, ipc_client: Any) -> None:
        self.config = config
        self.ipc = ipc_client
        self.buffer = config.open_buffer()
        self.validator = SampleValidator(load_use_case(config.use_case), source=config.thing_name)
        self.transport = GreengrassIpcTransport(ipc_client)
        self.publisher = Publisher(self.buffer, self.transport, config.telemetry_topic, flush=config.flush)
        self._stream: Any = None

    def on_local_message(self, event: Any) -> None:
        try:
            append_validated(self.validator, self.buffer, local_sample_rows(event))
        except (ValueError, json.JSONDecodeError) as exc:
            log.warning("dropped a local message on %s: %s", names.LOCAL_PUBSUB_SAMPLES_TOPIC, exc)

    def start(self) -> None:
        self.transport.connect(timeout_s=10)
        _, self._stream = self.ipc.subscribe_to_topic(
            topic=names.LOCAL_PUBSUB_SAMPLES_TOPIC, on_stream_event=self.on_local_message
        )
        self.announce()

    def announce(self) -> None:
        announcement = self.config.announcement(list(Precision))
        try:
            self.transport.publish(
                names.announce_topic(self.config.thing_name), announcement.model_dump_json().encode(), timeout_s=10
            )
        except TransportError as exc:  # the registry learns of us at the next start; telemetry still flows
            log.warning("announcement failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        self.publisher.run(stop)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self.transport.disconnect()
        self.buffer.close()


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    parser = argparse.ArgumentParser(prog="python -m edgeloop.greengrass_components.gateway")
    parser.add_argument("--thing-name", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--line-id", required=True)
    parser.add_argument("--use-case", required=True)
    parser.add_argument("--runtime-version", required=True)
    parser.add_argument("--buffer-path", required=True, type=Path)
    parser.add_argument("--buffer-max-bytes", type=int, default=None)
    parser.add_argument("--fsync-policy", default="normal")
    parser.add_argument("--architecture", default=None, help="default: this machine's")
    default_flush = FlushPolicy()
    parser.add_argument("--flush-max-latency-s", type=float, default=default_flush.max_latency_s)
    parser.add_argument("--flush-target-batch-bytes", type=int, default=default_flush.target_batch_bytes)
    args = parser.parse_args(argv)
    return GatewayConfig(
        thing_name=args.thing_name,
        site=args.site,
        line_id=args.line_id,
        use_case=args.use_case,
        architecture=args.architecture or architecture_of_machine(),
        runtime_version=args.runtime_version,
        transport="greengrass",
        buffer_path=args.buffer_path,
        buffer_max_bytes=args.buffer_max_bytes,
        fsync_policy=args.fsync_policy,
        flush=FlushPolicy(max_latency_s=args.flush_max_latency_s, target_batch_bytes=args.flush_target_batch_bytes),
    )


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    run_until_sigterm(lambda ipc: GreengrassGateway(config, ipc))
