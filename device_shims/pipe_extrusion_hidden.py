"""The simulated pipe line's hidden state (pipe_extrusion_physics.HIDDEN_COLUMNS) and the oracle's features.

The recorder never writes it: the regrind share already dosed and on its way to the die (with the screw
turns that carry it there), the material lot factor, the true screw speed and melt temperature, the
melt pressure the die would settle to without noise, and the true melt pressure. At a pack end the
physics tells what the die will see `horizon_s` later as far as that melt has passed the blender;
an oracle (edgeloop/oracle.py) learns from these next to the model's own features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .pipe_extrusion_physics import (
    HIDDEN_COLUMNS,
    HIDDEN_LOT,
    HIDDEN_LOT_DIE,
    HIDDEN_MELT,
    HIDDEN_PRESSURE,
    HIDDEN_PRESSURE_MODEL,
    HIDDEN_REGRIND_DIE,
    HIDDEN_REGRIND_DOSED,
    HIDDEN_RPM,
    HIDDEN_TURNS,
)


@dataclass(frozen=True)
class PipeHidden:
    """Per simulation step from `start_ms` (step i covers [start_ms + i x period, + period))."""

    start_ms: int
    period_s: int
    transport_revolutions: float
    viscosity_per_regrind_pct: float
    columns: dict[str, np.ndarray]

    @classmethod
    def from_physics(cls, physics: dict[str, np.ndarray], start_ms: int, config) -> PipeHidden:
        """From simulate()'s output and the simulator's PipeSimulatorConfig."""
        return cls(
            start_ms=int(start_ms),
            period_s=int(config.sample_period_s),
            transport_revolutions=float(config.transport_revolutions),
            viscosity_per_regrind_pct=float(config.viscosity_per_regrind_pct),
            columns={column: np.asarray(physics[column], dtype=np.float64) for column in HIDDEN_COLUMNS},
        )

    def __len__(self) -> int:
        return len(self.columns[HIDDEN_PRESSURE])

    def last_steps(self, window_end_ms: np.ndarray) -> np.ndarray:
        """The last step before each pack end (the pack's newest sample)."""
        period_ms = self.period_s * 1000
        steps = (np.asarray(window_end_ms, dtype=np.int64) - self.start_ms - 1) // period_ms
        if len(steps) and (steps.min() < 0 or steps.max() >= len(self)):
            raise ValueError(
                f"window_end from step {steps.min()} to {steps.max()} after start_ms={self.start_ms} lies outside"
                f" the hidden record's {len(self)} steps of {self.period_s} s"
            )
        return steps

    def blend_at_die(self, last: np.ndarray, ahead_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(regrind %, lot factor, known) of the melt at the die `ahead_s` (n, m) seconds after steps `last`
        (n,), at the screw speed of then: the blend dosed then where it has passed the blender already,
        else the blend dosed at `last` (what the blender doses next is not known yet)."""
        c = self.columns
        turns = c[HIDDEN_TURNS]
        origin = turns[last][:, None] + c[HIDDEN_RPM][last][:, None] / 60 * ahead_s - self.transport_revolutions
        known = origin <= turns[last][:, None]
        index = np.minimum(np.searchsorted(turns, origin, side="left"), last[:, None])
        index = np.where(known, index, last[:, None])
        return c[HIDDEN_REGRIND_DOSED][index], c[HIDDEN_LOT][index], known

    def features(
        self, window_end_ms: np.ndarray, spec_lower: np.ndarray, spec_upper: np.ndarray, horizon_s: int, label_s: int
    ) -> pd.DataFrame:
        """The oracle's hidden features at each pack end (rows in the order given)."""
        last = self.last_steps(window_end_ms)
        c = {name: values[last] for name, values in self.columns.items()}
        lower, upper = np.asarray(spec_lower, dtype=np.float64), np.asarray(spec_upper, dtype=np.float64)
        mid, half = (lower + upper) / 2, (upper - lower) / 2
        ahead = horizon_s + np.arange(0, label_s, self.period_s)[None, :] * np.ones((len(last), 1))
        regrind, lot, known = self.blend_at_die(last, ahead)
        k = self.viscosity_per_regrind_pct
        now = (1 - k * c[HIDDEN_REGRIND_DIE]) * c[HIDDEN_LOT_DIE]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(now > 0, ((1 - k * regrind) * lot).mean(axis=1) / now, 1.0)
        forecast = c[HIDDEN_PRESSURE_MODEL] * ratio
        return pd.DataFrame(
            {
                "hidden__forecast": forecast,
                "hidden__forecast_change": forecast - c[HIDDEN_PRESSURE],  # the change-mode target's analogue
                "hidden__forecast_in_bands": (forecast - mid) / half,
                "hidden__forecast_known_share": known.mean(axis=1),
                "hidden__regrind_coming": regrind.mean(axis=1) - c[HIDDEN_REGRIND_DIE],
                "hidden__regrind_die": c[HIDDEN_REGRIND_DIE],
                "hidden__regrind_dosed": c[HIDDEN_REGRIND_DOSED],
                "hidden__lot_die": c[HIDDEN_LOT_DIE],
                "hidden__lot_coming": lot.mean(axis=1) / c[HIDDEN_LOT_DIE],
                "hidden__rpm": c[HIDDEN_RPM],
                "hidden__melt": c[HIDDEN_MELT],
                "hidden__pressure_now": c[HIDDEN_PRESSURE],
                "hidden__pressure_settling": c[HIDDEN_PRESSURE_MODEL] - c[HIDDEN_PRESSURE],
            }
        )

    def true_label(self, window_end_ms: np.ndarray, horizon_s: int, label_s: int) -> np.ndarray:
        """Mean true melt pressure of the steps in [pack end + horizon_s, + label_s) (NaN past the record)."""
        period_ms = self.period_s * 1000
        begin_ms = np.asarray(window_end_ms, dtype=np.int64) + horizon_s * 1000 - self.start_ms
        first = -(-begin_ms // period_ms)
        stop = -(-(begin_ms + label_s * 1000) // period_ms)
        cumulative = np.concatenate([[0.0], np.cumsum(self.columns[HIDDEN_PRESSURE])])
        inside = (first >= 0) & (stop <= len(self)) & (stop > first)
        label = np.full(len(first), np.nan)
        label[inside] = (cumulative[stop[inside]] - cumulative[first[inside]]) / (stop - first)[inside]
        return label
