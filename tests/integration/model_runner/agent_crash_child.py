"""The gateway process of the update agent's crash test: restore, serve, apply one update.

    python agent_crash_child.py CONFIG.json

Runs the production UpdateAgent on `state_dir` with live extrusion data, downloading payloads
with the production `s3_download` (the test points AWS_ENDPOINT_URL at its own slow S3 stand-in).
Each step is one JSON line on stdout:

    {"event": "restored", "version": ..., "problems": [...]}     what restore() serves, and why not
    {"event": "predictions", "version": ..., "values": [...]}    the served model on the probe rows
    {"event": "hook", "point": ...}                              parked at a crash point (never returns)
    {"event": "report", "status": ..., "version": ..., "reason": ...}

`hook` names where the process parks so the test can SIGKILL it exactly there; the hooks are
installed here, around the agent's own functions, after restore() has run:
    verify                    on entry to load_payload, inside the agent's verification of the update
    before-replace:<file>     the temp file of <file> is complete, os.replace not done yet
    after-replace:<file>      <file> is in place, nothing after it written yet
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np

from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner import agent as agent_module
from edgeloop.greengrass_components.model_runner.agent import UpdateAgent, s3_download
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.schemas import ModelUpdate, load_use_case

USE_CASE = load_use_case("extrusion")
LIVE_START_MS = 1_767_225_600_000
LIVE_SECONDS = 600
THING = "gw-crash"


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def park(point: str) -> None:
    """Tell the test where we are and wait for its SIGKILL."""
    emit("hook", point=point)
    threading.Event().wait()


def install_hook(hook: str) -> None:
    if hook == "verify":
        verify = agent_module.load_payload

        def parked_verify(*args, **kwargs):
            park(hook)
            return verify(*args, **kwargs)

        agent_module.load_payload = parked_verify
        return
    when, _, file_name = hook.partition(":")
    if when not in ("before-replace", "after-replace") or not file_name:
        raise ValueError(f"hook={hook!r} is not verify, before-replace:<file> or after-replace:<file>")
    replace = os.replace

    def parked_replace(src, dst, *args, **kwargs):
        target = Path(dst).name == file_name
        if target and when == "before-replace":
            park(hook)
        replace(src, dst, *args, **kwargs)
        if target and when == "after-replace":
            park(hook)

    os.replace = parked_replace


def emit_predictions(live: LiveScorer, probe: np.ndarray) -> None:
    scorer = live.active
    values = None if scorer is None else [float(v) for v in scorer.predict(probe)]
    emit("predictions", version=None if scorer is None else scorer.version, values=values)


def run(config: dict) -> None:
    live = LiveScorer(USE_CASE)
    live.add(ExtrusionLineSimulator("line-1", seed=2, start_ms=LIVE_START_MS).advance(LIVE_SECONDS))
    agent = UpdateAgent(
        THING,
        USE_CASE,
        live,
        lambda report: emit("report", status=report.status.value, version=report.version, reason=report.reason),
        s3_download,
        state_dir=Path(config["state_dir"]),
    )
    restored = agent.restore()
    emit("restored", version=restored.version if restored else None, problems=agent.restore_problems)
    probe = np.load(config["probe_path"])
    emit_predictions(live, probe)
    if config.get("update") is None:
        return
    if config.get("hook"):
        install_hook(config["hook"])
    agent.handle(ModelUpdate.model_validate(config["update"]))
    emit_predictions(live, probe)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    run(json.loads(Path(sys.argv[1]).read_text()))
