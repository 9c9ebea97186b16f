"""A crash at any point of an update leaves the gateway serving a verified model.

The update agent runs in a child process (agent_crash_child.py) that serves model v1 from its
state directory and applies an update to v2, downloaded with the production s3_download from a
local S3 stand-in over HTTP. The child is SIGKILLed at a named point: mid-download (the server
stalls after half the body), on entry to verification, and around every file replace of the swap.
A fresh child on the same state directory must then serve v1 (or v2, once its metadata is in
place), predict what that model's weights say, leave no temp files behind, and still be able to
apply v2. The state directory is also corrupted by hand: the agent must fall back to the rollback
slot, or say clearly that it has no verified model.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from edgeloop.greengrass_components.model_runner.agent import (
    ACTIVE_META,
    ACTIVE_PAYLOAD,
    FLOOR_FILE,
    PREVIOUS_META,
    PREVIOUS_PAYLOAD,
    UpdateAgent,
)
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import write_payload
from edgeloop.schemas import DeviceStatus, ModelUpdate, Precision, feature_schema_hash

sys.path.insert(0, str(Path(__file__).parent))
from agent_crash_child import LIVE_SECONDS, LIVE_START_MS, USE_CASE  # noqa: E402

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator  # noqa: E402

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

CHILD = Path(__file__).with_name("agent_crash_child.py")
BUCKET = "edgeloop-models"
MODEL_ID = "extrusion-line-1"
BIAS = {"1.0.0": 0.0, "2.0.0": 0.02}  # v2 predicts 0.02 higher: the served version shows in the outputs
WAIT_S = 60.0  # generous: a loaded 2-core machine starts a child in seconds, not tens of them
# The two model slots and the version floor (the highest version accepted, kept across restarts).
STATE_FILES = {ACTIVE_PAYLOAD, ACTIVE_META, PREVIOUS_PAYLOAD, PREVIOUS_META, FLOOR_FILE}


# --- models -------------------------------------------------------------------------------------
def payload(version: str) -> bytes:
    """A linear model predicting (last cold OD of the window) + BIAS[version]."""
    weights = np.zeros(len(USE_CASE.feature_names), dtype=np.float32)
    weights[USE_CASE.feature_names.index("cold_od_average__last")] = 1.0
    return write_payload(
        LinearModel(weights=weights, bias=BIAS[version]),
        model_id=MODEL_ID,
        version=version,
        objective="reg:squarederror",
        base_score=0.0,
        features=USE_CASE.feature_names,
    )


def update_for(version: str) -> ModelUpdate:
    return ModelUpdate(
        deployment_id=f"dep-{version}",
        model_id=MODEL_ID,
        version=version,
        precision=Precision.FP32,
        payload_uri=f"s3://{BUCKET}/models/{MODEL_ID}/{version}/fp32.npz",
        sha256=hashlib.sha256(payload(version)).hexdigest(),
        features=USE_CASE.feature_names,
        feature_schema_hash=feature_schema_hash(USE_CASE.feature_names),
    )


def expected_predictions(version: str, probe: np.ndarray) -> np.ndarray:
    """What the weights say, computed without the scorer: bias + 1 * last cold OD, in float32."""
    last_od = probe[:, USE_CASE.feature_names.index("cold_od_average__last")]
    return (np.float32(BIAS[version]) + last_od).astype(np.float32)


def apply_in_process(state_dir: Path, *versions: str) -> None:
    """Bring state_dir to `versions` applied in order, as an earlier life of the gateway did."""
    live = LiveScorer(USE_CASE)
    live.add(ExtrusionLineSimulator("line-1", seed=2, start_ms=LIVE_START_MS).advance(LIVE_SECONDS))
    objects = {update_for(v).payload_uri: payload(v) for v in versions}
    agent = UpdateAgent("gw-crash", USE_CASE, live, lambda report: None, objects.__getitem__, state_dir=state_dir)
    for version in versions:
        report = agent.handle(update_for(version))
        assert report.status is DeviceStatus.APPLIED, report.reason


# --- the S3 stand-in ------------------------------------------------------------------------------
class SlowS3:
    """GET /bucket/key over HTTP on 127.0.0.1 (path-style, as boto3 addresses an IP endpoint).

    With `stall` set, a GET sends the headers and half the body, sets `half_sent` and holds the
    rest until `release` is set, so the test can kill the downloader mid-transfer.
    """

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.stall = False
        self.half_sent = threading.Event()
        self.release = threading.Event()
        self.gets = 0
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                store.gets += 1
                body = store.objects.get(self.path.split("?", 1)[0].lstrip("/"))
                if body is None:
                    self.send_error(404, "NoSuchKey")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                half = len(body) // 2
                self.wfile.write(body[:half])
                self.wfile.flush()
                if store.stall:
                    store.half_sent.set()
                    store.release.wait(WAIT_S)
                try:
                    self.wfile.write(body[half:])
                except OSError:  # the downloader was killed
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, update: ModelUpdate, data: bytes) -> None:
        self.objects[update.payload_uri.removeprefix("s3://")] = data

    def __enter__(self) -> SlowS3:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# --- the child process ------------------------------------------------------------------------------
class AgentProcess:
    """One life of the gateway's update agent; its stdout is a stream of JSON events."""

    def __init__(self, work: Path, name: str, endpoint: str, update: ModelUpdate | None, hook: str | None) -> None:
        config = {
            "state_dir": str(work / "model"),
            "probe_path": str(work / "probe.npy"),
            "update": None if update is None else update.model_dump(mode="json"),
            "hook": hook,
        }
        config_path = work / f"{name}.json"
        config_path.write_text(json.dumps(config))
        self.stderr_path = work / f"{name}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        self.events: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next_event(self, expected: str, timeout_s: float = WAIT_S) -> dict:
        try:
            event = self.events.get(timeout=timeout_s)
        except queue.Empty:
            event = {"event": f"nothing within {timeout_s} s"}
        assert event is not None and event["event"] == expected, (
            f"expected {expected!r}, got {event}; child log:\n{self.stderr_path.read_text()[-3000:]}"
        )
        return event

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT_S)

    def finish(self) -> None:
        assert self.process.wait(timeout=WAIT_S) == 0, self.stderr_path.read_text()[-3000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.process.stdout.close()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    probe = np.random.default_rng(5).normal(30.0, 2.0, size=(64, len(USE_CASE.feature_names))).astype(np.float32)
    np.save(tmp_path / "probe.npy", probe)
    return tmp_path


@pytest.fixture
def s3():
    with SlowS3() as server:
        server.put(update_for("2.0.0"), payload("2.0.0"))
        yield server


@pytest.fixture
def spawn(work: Path, s3: SlowS3):
    children: list[AgentProcess] = []

    def start(update: ModelUpdate | None = None, hook: str | None = None) -> AgentProcess:
        child = AgentProcess(work, f"life-{len(children) + 1}", s3.endpoint, update, hook)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def assert_serves(child: AgentProcess, version: str | None, probe: np.ndarray) -> None:
    served = child.next_event("predictions")
    assert served["version"] == version
    if version is not None:
        np.testing.assert_allclose(served["values"], expected_predictions(version, probe), rtol=0, atol=1e-5)


# --- crashes during an update ---------------------------------------------------------------------
CRASH_POINTS = [
    # (where, the version a fresh process serves, the slot restore() must skip on the way)
    ("download", "1.0.0", None),
    ("verify", "1.0.0", None),
    (f"after-replace:{PREVIOUS_PAYLOAD}", "1.0.0", None),
    (f"before-replace:{ACTIVE_PAYLOAD}", "1.0.0", None),
    (f"after-replace:{ACTIVE_PAYLOAD}", "1.0.0", ACTIVE_PAYLOAD),  # v2 bytes under v1's metadata
    (f"after-replace:{ACTIVE_META}", "2.0.0", None),  # the swap's pointer is written: v2 is the model
]


@pytest.mark.parametrize("point, served_after, skipped_slot", CRASH_POINTS, ids=[p[0] for p in CRASH_POINTS])
def test_sigkill_during_an_update_leaves_a_verified_model(work, s3, spawn, point, served_after, skipped_slot):
    probe = np.load(work / "probe.npy")
    state_dir = work / "model"
    apply_in_process(state_dir, "1.0.0")
    s3.stall = point == "download"

    crashing = spawn(update_for("2.0.0"), hook=None if point == "download" else point)
    assert crashing.next_event("restored")["version"] == "1.0.0"
    assert_serves(crashing, "1.0.0", probe)
    if point == "download":
        assert s3.half_sent.wait(WAIT_S), f"the download never started: {crashing.stderr_path.read_text()[-3000:]}"
    else:
        assert crashing.next_event("hook")["point"] == point
    crashing.kill()
    s3.stall = False
    s3.release.set()

    # The next life serves a verified model, then finishes the update it was killed in.
    restarted = spawn(update_for("2.0.0"))
    restored = restarted.next_event("restored")
    assert restored["version"] == served_after
    if skipped_slot is None:
        assert restored["problems"] == []
    else:
        assert len(restored["problems"]) == 1 and skipped_slot in restored["problems"][0]
        assert "sha256 mismatch" in restored["problems"][0]
    assert_serves(restarted, served_after, probe)
    leftovers = {p.name for p in state_dir.iterdir()} - STATE_FILES
    assert not leftovers, f"temp files survived the restart: {leftovers}"

    report = restarted.next_event("report")
    assert (report["status"], report["version"]) == ("applied", "2.0.0"), report["reason"]
    assert_serves(restarted, "2.0.0", probe)
    restarted.finish()
    assert json.loads((state_dir / ACTIVE_META).read_text())["version"] == "2.0.0"
    assert (state_dir / ACTIVE_PAYLOAD).read_bytes() == payload("2.0.0")


# --- a slot damaged on disk ---------------------------------------------------------------------------
def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def test_a_corrupted_active_slot_falls_back_to_the_rollback_slot(work, spawn):
    probe = np.load(work / "probe.npy")
    apply_in_process(work / "model", "1.0.0", "2.0.0")
    flip_bytes(work / "model" / ACTIVE_PAYLOAD)

    restarted = spawn()
    restored = restarted.next_event("restored")
    assert restored["version"] == "1.0.0"
    assert len(restored["problems"]) == 1
    assert ACTIVE_PAYLOAD in restored["problems"][0] and "sha256 mismatch" in restored["problems"][0]
    assert_serves(restarted, "1.0.0", probe)
    restarted.finish()


@pytest.mark.parametrize("versions", [("1.0.0",), ("1.0.0", "2.0.0")], ids=["no-rollback-slot", "both-corrupted"])
def test_no_verified_slot_is_reported_and_nothing_is_served(work, spawn, versions):
    state_dir = work / "model"
    apply_in_process(state_dir, *versions)
    damaged = [name for name in (ACTIVE_PAYLOAD, PREVIOUS_PAYLOAD) if (state_dir / name).exists()]
    assert len(damaged) == len(versions)
    for name in damaged:
        flip_bytes(state_dir / name)

    restarted = spawn()
    restored = restarted.next_event("restored")
    assert restored["version"] is None
    assert [name for name in damaged if any(name in p for p in restored["problems"])] == damaged
    assert all("sha256 mismatch" in problem for problem in restored["problems"])
    assert_serves(restarted, None, np.load(work / "probe.npy"))
    restarted.finish()
    assert "no verified model" in restarted.stderr_path.read_text()
