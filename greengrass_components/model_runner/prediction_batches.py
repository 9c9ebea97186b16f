"""Predictions for IoT Core, held and sent as PredictionBatches under the Gateway's flush rule.

A prediction every pack stride (30 s) as its own IoT Core message is ~87,600 messages per gateway
and month, each a rule, an SQS message and a share of a landing invocation. The batcher holds them
under the same FlushPolicy the Gateway's telemetry publisher uses (gateway/flush_policy.py): a batch
goes once its oldest prediction has waited max_latency_s (0: every prediction at once), or at once
when it is full (MAX_BATCH_PREDICTIONS, or MAX_PREDICTION_BATCH_BYTES encoded: half of IoT Core's
128 KB message limit).

Held predictions survive a restart: each is appended to a file in the runner's work directory as it
is held (one small write a pack stride, where the Gateway's buffer writes every second), and the file
is emptied when its batch leaves. After a restart they are due at once (FlushPolicy.due_at(None):
appended before the restart); a file line that does not decode is dropped and logged. A stop sends
what is held (`drain`). Batches handed out wait in the runner's outbox (what IoT Core refused, in
memory; the nucleus spools what it accepted). Alerts are never held. Both hosts use this: the
Greengrass component and the simulated gateway.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy
from edgeloop.schemas.prediction import (
    MAX_BATCH_PREDICTIONS,
    MAX_PREDICTION_BATCH_BYTES,
    PredictionBatch,
    PredictionMessage,
    decode_prediction,
)

log = logging.getLogger(__name__)
HELD_FILE = "held_predictions.jsonl"  # in the runner's state directory


def prediction_flush_policy(max_latency_s: float) -> FlushPolicy:
    """The Gateway's flush rule with the prediction batch's size: due after max_latency_s, or full."""
    return FlushPolicy(max_latency_s=max_latency_s, target_batch_bytes=MAX_PREDICTION_BATCH_BYTES)


def prediction_batcher(max_latency_s: float, state_dir: Path, clock: Callable[[], float]) -> PredictionBatcher:
    """The model runner's: its recipe's flush latency, held predictions kept in its state directory."""
    return PredictionBatcher(prediction_flush_policy(max_latency_s), clock, state_dir / HELD_FILE)


class PredictionBatcher:
    """Holds PredictionMessages; hands out the batches that are due (`due`) or all of them (`drain`).

    A batch holds one thing's and one line's predictions, oldest first: a prediction of another
    thing or line closes the batch before it (the PredictionBatch contract)."""

    def __init__(
        self, flush: FlushPolicy, clock: Callable[[], float] = time.monotonic, path: Path | None = None
    ) -> None:
        """path: the file held predictions are kept in across restarts (None: memory only)."""
        self.flush = flush
        self._clock = clock
        self._path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._full: list[PredictionBatch] = []  # closed, waiting for the next due()
        self._held: list[PredictionMessage] = []
        self._held_bytes = 0
        self._oldest_at: float | None = None  # clock() when the oldest held prediction was added
        for prediction in self._restored():
            self.add(prediction, keep=False)
        self._oldest_at = None  # held before the restart: due at once

    @property
    def held(self) -> int:
        return len(self._held) + sum(len(batch.predictions) for batch in self._full)

    def add(self, prediction: PredictionMessage, *, keep: bool = True) -> None:
        text = prediction.model_dump_json()
        size = len(text) + 1  # and its comma (the wire form, without thing, line and None fields, is smaller)
        if self._held and (
            (self._held[0].thing_name, self._held[0].line_id) != (prediction.thing_name, prediction.line_id)
            or _header_bytes(self._held[0]) + self._held_bytes + size > self.flush.target_batch_bytes
        ):
            self._close()
        if not self._held:
            self._oldest_at = self._clock()
        self._held.append(prediction)
        self._held_bytes += size
        if keep and self._path is not None:
            with self._path.open("a", encoding="utf-8") as file:
                file.write(text + "\n")
                file.flush()
                os.fsync(file.fileno())
        if len(self._held) == MAX_BATCH_PREDICTIONS:
            self._close()

    def due(self, now: float | None = None) -> list[PredictionBatch]:
        """The full batches, and the held one if its oldest prediction has waited max_latency_s."""
        now = self._clock() if now is None else now
        if self._held and self.flush.due_at(self._oldest_at) <= now:
            self._close()
        return self._hand_out()

    def drain(self) -> list[PredictionBatch]:
        """Everything held, due or not (a stop; an alert, whose predictions go before it)."""
        if self._held:
            self._close()
        return self._hand_out()

    def _close(self) -> None:
        first = self._held[0]
        self._full.append(PredictionBatch(thing_name=first.thing_name, line_id=first.line_id, predictions=self._held))
        self._held, self._held_bytes, self._oldest_at = [], 0, None

    def _hand_out(self) -> list[PredictionBatch]:
        """The closed batches; the file keeps only what is still held (written whole, then renamed)."""
        batches, self._full = self._full, []
        if batches and self._path is not None:
            temporary = self._path.with_name(self._path.name + ".tmp")
            with temporary.open("w", encoding="utf-8") as file:
                file.writelines(p.model_dump_json() + "\n" for p in self._held)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self._path)
        return batches

    def _restored(self) -> list[PredictionMessage]:
        if self._path is None or not self._path.exists():
            return []
        restored = []
        for number, line in enumerate(self._path.read_bytes().splitlines(), start=1):
            try:
                restored.append(decode_prediction(line))
            except ValueError as exc:  # a torn last line after a power loss, or a foreign edit
                log.warning("%s line %d: held prediction dropped: %s", self._path, number, exc)
        if restored:
            log.info("%d held predictions restored from %s", len(restored), self._path)
        return restored


def _header_bytes(prediction: PredictionMessage) -> int:
    header = {"thing_name": prediction.thing_name, "line_id": prediction.line_id, "predictions": []}
    return len(json.dumps(header, separators=(",", ":")))
