"""What the demo runs: how many lines, how much simulated time, which gateway goes offline."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from edgeloop.model_runtime.model_format import RUNTIME_VERSION
from edgeloop.schemas import Architecture, RolloutPolicy

# Gateways cycle through every architecture, so one rollout reaches each hardware kind the tiers support.
DEMO_ARCHITECTURES = tuple(Architecture)
DEMO_SITE = "plant-a"
DEMO_USE_CASE = "extrusion"  # the simulated lines are extruders (device_shims/extrusion.py)
DEMO_RUNTIME_VERSION = RUNTIME_VERSION  # the gateways run this release's ModelRunner


class DemoSettings(BaseModel):
    lines: int = Field(default=3, ge=1, le=20)
    history_hours: float = Field(default=6.0, gt=0, description="simulated history each line sends before training")
    offline_minutes: float = Field(default=30.0, ge=0, description="one gateway is offline this long, then catches up")
    live_minutes: float = Field(default=40.0, gt=0, description="simulated time scored live with the new model")
    live_speedup: float = Field(default=60.0, gt=0, description="simulated seconds per wall-clock second, live phase")
    seed: int = 7
    use_case: str = DEMO_USE_CASE
    model_version: str = "1.0.0"
    workdir: Path = Path(".edgeloop/demo")
    report_path: Path = Path("demo-report.html")
    timeout_s: float = Field(default=600.0, gt=0, description="upper bound for each waiting step")
    rollout_policy: RolloutPolicy = Field(
        default_factory=RolloutPolicy, description="what the demo's rollout follows (its environment variables)"
    )

    def line_ids(self) -> list[str]:
        return [f"line-{i + 1}" for i in range(self.lines)]

    def thing_name(self, line_id: str) -> str:
        return f"gw-{line_id}"
