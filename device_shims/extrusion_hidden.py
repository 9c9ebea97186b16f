"""The simulated extrusion line's hidden state, recorded per second, and the oracle's features from it.

No sensor measures it: the cable already extruded (hot OD x (1 - shrink), what the cold gauge will
see `cooling_length_m / speed` later), the true speed and screw rpm, the material's melt output factor,
the setpoints and when the operators last corrected the rpm. An oracle predictor (edgeloop/oracle.py)
learns from these next to the model's own features; it sets the best score any model of the
observable signals could reach, so a model's shortfall can be told from the physics' limit.

`ExtrusionLineSimulator(..., record_hidden=True)` keeps the record (float32, about 32 bytes per
simulated second); recording never touches the simulator's random numbers, so its samples stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .extrusion_config import SimulatorConfig
from .extrusion_physics import EXTRUDED_OD, HISTORY_S, MATERIAL

# per-second columns: extruded OD (what the gauge will see), true cold OD (what it sees now), true
# speed and rpm, material factor, speed and rpm setpoints, second of the last operator correction
EXTRUDED, COLD, SPEED, RPM, MATERIAL_FACTOR, SP_SPEED, SP_RPM, LAST_ACTION_S = (
    EXTRUDED_OD,
    "cold_od",
    "speed",
    "screw_rpm",
    MATERIAL,
    "sp_speed",
    "sp_rpm",
    "last_action_s",
)
COLUMNS = (EXTRUDED, COLD, SPEED, RPM, MATERIAL_FACTOR, SP_SPEED, SP_RPM, LAST_ACTION_S)
SCALARS = ("start_ms", "cooling_length_m", "block_s", "operator_threshold", "operator_wait_s")  # saved beside COLUMNS
SEEN_OFFSETS_S = (60, 120, 180, 240)  # the gauge readings the operators will react to before the label
SINCE_ACTION_CAP_S = 3600
COMPACT_BLOCKS = 1440  # join the recorded blocks a day at a time: a million small arrays cost more than their data


class HiddenRecorder:
    """Collects the hidden columns block by block (ExtrusionLineSimulator calls `add`)."""

    def __init__(self) -> None:
        self._blocks: dict[str, list[np.ndarray]] = {column: [] for column in COLUMNS}

    def add(self, truth: dict[str, np.ndarray], setpoints: tuple, last_action_s: int) -> None:
        n = len(truth[EXTRUDED_OD])
        sp_speed, sp_rpm, _ = setpoints
        values = {
            EXTRUDED: truth[EXTRUDED_OD],
            COLD: truth["cold_od_average"],
            SPEED: truth["speed"],
            RPM: truth["screw_rpm"],
            MATERIAL_FACTOR: truth[MATERIAL],
            SP_SPEED: np.broadcast_to(sp_speed, n),
            SP_RPM: np.broadcast_to(sp_rpm, n),
            LAST_ACTION_S: np.full(n, last_action_s),
        }
        for column, value in values.items():
            blocks = self._blocks[column]
            blocks.append(np.asarray(value, dtype=np.float32))
            if len(blocks) >= COMPACT_BLOCKS:
                self._blocks[column] = [np.concatenate(blocks)]

    def record(self, start_ms: int, config: SimulatorConfig, block_s: int) -> ExtrusionHidden:
        columns = {c: np.concatenate(b) if b else np.zeros(0, np.float32) for c, b in self._blocks.items()}
        return ExtrusionHidden(
            start_ms=int(start_ms),
            cooling_length_m=float(config.cooling_length_m),
            columns=columns,
            block_s=int(block_s),
            operator_threshold=float(config.operator_threshold),
            operator_wait_s=int(config.operator_wait_s),
        )


@dataclass(frozen=True)
class ExtrusionHidden:
    """Per simulated second from `start_ms` (second k covers [start_ms + k s, start_ms + (k+1) s))."""

    start_ms: int
    cooling_length_m: float
    columns: dict[str, np.ndarray]
    # the operators' rule (extrusion.py): at each block start, a correction when the gauge's mean over the
    # block before is off by more than operator_threshold x the tolerance, operator_wait_s after the last one
    block_s: int
    operator_threshold: float
    operator_wait_s: int

    def __len__(self) -> int:
        return len(self.columns[EXTRUDED])

    def save(self, path: Path) -> None:
        np.savez(path, **{name: getattr(self, name) for name in SCALARS}, **self.columns)

    @classmethod
    def load(cls, path: Path) -> ExtrusionHidden:
        with np.load(path) as stored:
            scalars = {name: stored[name].item() for name in SCALARS}
            return cls(columns={column: stored[column] for column in COLUMNS}, **scalars)

    def seconds(self, window_end_ms: np.ndarray) -> np.ndarray:
        """Pack ends as seconds into the record; a pack's samples end the second before."""
        ends = (np.asarray(window_end_ms, dtype=np.int64) - self.start_ms) // 1000
        if len(ends) and (ends.min() < 1 or ends.max() > len(self)):
            raise ValueError(
                f"window_end from {ends.min()} s to {ends.max()} s after start_ms={self.start_ms} lies outside"
                f" the hidden record's {len(self)} s"
            )
        return ends

    def transit_s(self, speed: np.ndarray) -> np.ndarray:
        """Seconds from the extruder to the cold gauge at `speed` (m/min), as the physics rounds them."""
        seconds = np.round(self.cooling_length_m / np.asarray(speed, dtype=np.float64) * 60)
        return np.clip(seconds.astype(np.int64), 1, HISTORY_S - 1)

    def gauge_view(self, now_s: np.ndarray, at_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the cold gauge will show at seconds `at_s` (n, m) as known at `now_s` (n,) seconds (the pack
        end): the cable extruded by then at the speed of now; cable not extruded yet counts as the last
        extruded. Returns (values, known) with known = already extruded."""
        last = np.asarray(now_s)[:, None] - 1
        extruded = self.columns[EXTRUDED]
        source = at_s - self.transit_s(self.columns[SPEED][last])
        known = source <= last
        return extruded[np.where(known, source, last)].astype(np.float64), known

    def features(
        self, window_end_ms: np.ndarray, spec_lower: np.ndarray, spec_upper: np.ndarray, horizon_s: int, label_s: int
    ) -> pd.DataFrame:
        """The oracle's hidden features at each pack end (rows in the order given)."""
        ends = self.seconds(window_end_ms)
        last = ends - 1
        mid = (np.asarray(spec_lower, dtype=np.float64) + np.asarray(spec_upper, dtype=np.float64)) / 2
        half = (np.asarray(spec_upper, dtype=np.float64) - np.asarray(spec_lower, dtype=np.float64)) / 2
        c = {name: values[last].astype(np.float64) for name, values in self.columns.items()}  # at the pack end
        label_at = ends[:, None] + horizon_s + np.arange(label_s)[None, :]
        forecast, known = self.gauge_view(ends, label_at)
        recent = np.maximum(last[:, None] - np.arange(60)[None, :], 0)
        out = {
            "hidden__forecast": forecast.mean(axis=1),
            "hidden__forecast_in_bands": (forecast.mean(axis=1) - mid) / half,
            "hidden__forecast_change": forecast.mean(axis=1) - c[COLD],  # the change-mode target's analogue
            "hidden__forecast_known_share": known.mean(axis=1),
            "hidden__extruded_now": c[EXTRUDED],
            "hidden__extruded_mean_60s": self.columns[EXTRUDED][recent].astype(np.float64).mean(axis=1),
            "hidden__cold_now": c[COLD],
            "hidden__speed": c[SPEED],
            "hidden__transit_s": self.transit_s(c[SPEED]).astype(np.float64),
            "hidden__material": c[MATERIAL_FACTOR],
            "hidden__rpm_gap": c[SP_RPM] / c[RPM] - 1,
            "hidden__speed_gap": c[SP_SPEED] / c[SPEED] - 1,
            "hidden__since_action_s": np.minimum(last - c[LAST_ACTION_S], SINCE_ACTION_CAP_S),
        }
        for offset in SEEN_OFFSETS_S:
            seen, _ = self.gauge_view(ends, ends[:, None] + offset + np.arange(-15, 15)[None, :])
            out[f"hidden__seen_in_bands_{offset}s"] = (seen.mean(axis=1) - mid) / half
        out.update(self._operators(ends, c[LAST_ACTION_S], (mid, half), horizon_s + label_s))
        return pd.DataFrame(out)

    def _operators(self, ends: np.ndarray, last_action: np.ndarray, band: tuple, reach_s: int) -> dict:
        """The operators' chances to correct the rpm in time to change the label: block starts from the pack end
        until the label window's last cable is extruded where their rule (block_s, operator_threshold,
        operator_wait_s) calls for a correction, on the gauge readings known now; they take each with some
        probability. Their count, the first one's delay and the deviation it reacts to."""
        mid, half = band
        b, n = self.block_s, len(ends)
        transit = self.transit_s(self.columns[SPEED][ends - 1])
        count = reach_s // b + 1
        starts = -(-ends // b)[:, None] * b + b * np.arange(count)[None, :]
        block = (starts[:, :, None] + np.arange(-b, 0, 5)[None, None, :]).reshape(
            n, -1
        )  # every 5 s of the block before
        seen, _ = self.gauge_view(ends, block)
        deviation = (seen.reshape(n, count, -1).mean(axis=2) - mid[:, None]) / half[:, None]
        due = (
            (starts <= (ends + reach_s - transit)[:, None])
            & (starts - last_action[:, None] >= self.operator_wait_s)
            & (np.abs(deviation) > self.operator_threshold)
        )
        first, rows, any_due = due.argmax(axis=1), np.arange(n), due.any(axis=1)
        return {
            "hidden__operator_chances": due.sum(axis=1).astype(np.float64),
            "hidden__operator_first_in_s": np.where(any_due, starts[rows, first] - ends, reach_s).astype(np.float64),
            "hidden__operator_deviation_in_bands": np.where(any_due, deviation[rows, first], 0.0),
        }

    def true_label(self, window_end_ms: np.ndarray, horizon_s: int, label_s: int) -> np.ndarray:
        """Mean true cold OD over [pack end + horizon_s, + label_s) (NaN past the record's end)."""
        ends = self.seconds(window_end_ms)
        cumulative = np.concatenate([[0.0], np.cumsum(self.columns[COLD].astype(np.float64))])
        start = ends + horizon_s
        inside = start + label_s <= len(self)
        label = np.full(len(ends), np.nan)
        label[inside] = (cumulative[start[inside] + label_s] - cumulative[start[inside]]) / label_s
        return label
