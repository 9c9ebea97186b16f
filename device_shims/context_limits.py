"""Spec limits of the use case's target metric, from the mapping's `context.limits` block.

`fixed` limits ride on the RUN intervals (fixed_limits); `setpoint ± band`, or a lower and an upper
limit column, give a LIMITS interval each time the limits (or the run) change (column_limits);
`run_median ± band` gives one LIMITS interval per run, centred on the median of the target over the
run's productive rows (median_limits; UseCaseConfig.is_productive_state, every row when the block
has no states).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.schemas import ContextInterval, ContextKind, UseCaseConfig
from edgeloop.schemas.context import SpecLimits

from .context_rows import ContextRows, context_interval, iso, spans
from .replay_mapping import ContextMapping


def fixed_limits(
    block: ContextMapping, run_values: list[str], use_case: UseCaseConfig, source: str
) -> dict[str, SpecLimits] | None:
    """Run value -> its `fixed` limits (None when the block gives none): one pair for every run, or a
    pair per run value, which must then cover every run of the recording."""
    limits = block.limits
    if limits is None or limits.fixed is None:
        return None
    if isinstance(limits.fixed, tuple):
        lower, upper = limits.fixed
        return dict.fromkeys(run_values, SpecLimits(target_metric=use_case.target_metric, lower=lower, upper=upper))
    unknown = sorted(set(run_values) - set(limits.fixed))
    if unknown:
        raise ValueError(
            f"{source}: context.limits.fixed has no [lower, upper] for run value {unknown[0]!r} "
            f"(runs from context.runs: {unknown[:10]}; limits given for {sorted(limits.fixed)})"
        )
    return {
        value: SpecLimits(target_metric=use_case.target_metric, lower=lower, upper=upper)
        for value, (lower, upper) in limits.fixed.items()
    }


def column_limits(
    block: ContextMapping,
    rows: ContextRows,
    order: np.ndarray,
    t: np.ndarray,
    run: np.ndarray,
    end_ms: int,
    line_id: str,
    use_case: UseCaseConfig,
    source: str,
) -> list[ContextInterval]:
    """Limits that follow columns: setpoint ± band, or a lower and an upper limit column. A new
    interval each time the limits (or the run) change; empty cells keep the value before them."""
    limits = block.limits
    if limits.setpoint:
        centre = _ffill(_limit_column(rows, limits.setpoint, "context.limits.setpoint", source)[order])
        half = limits.band if limits.band is not None else np.abs(centre) * limits.relative_band
        lower, upper = centre - half, centre + half
        keys = [("context.limits.setpoint", limits.setpoint)]
    else:
        lower = _ffill(_limit_column(rows, limits.columns.lower, "context.limits.columns.lower", source)[order])
        upper = _ffill(_limit_column(rows, limits.columns.upper, "context.limits.columns.upper", source)[order])
        keys = [
            ("context.limits.columns.lower", limits.columns.lower),
            ("context.limits.columns.upper", limits.columns.upper),
        ]
    change = np.ones(len(t), dtype=bool)
    change[1:] = (run[1:] != run[:-1]) | ~_same(lower[1:], lower[:-1]) | ~_same(upper[1:], upper[:-1])
    first = np.flatnonzero(change)
    intervals = []
    for (start, end), i in zip(spans(t, first, end_ms), first, strict=True):
        lo, hi = float(lower[i]), float(upper[i])
        if start >= end or np.isnan(lo) or np.isnan(hi):
            continue  # before the first value: no limits
        if not lo < hi:
            named = ", ".join(f"{key}={column!r}" for key, column in keys)
            raise ValueError(
                f"{source}: {named} give lower={lo:g} >= upper={hi:g} from {iso(start)} "
                f"(row {rows.row_number(int(order[i]))}): no tolerance"
                + (" (a relative_band of a zero setpoint? use band)" if limits.relative_band else "")
            )
        if limits.setpoint:
            text = _band_text(float(centre[i]), limits.band, limits.relative_band, "setpoint")
        else:
            text = f"[{lo:g}, {hi:g}]"
        spec = SpecLimits(target_metric=use_case.target_metric, lower=lo, upper=hi)
        intervals.append(context_interval(ContextKind.LIMITS, line_id, start, end, text, spec))
    return intervals


def _limit_column(rows: ContextRows, column: str, key: str, source: str) -> np.ndarray:
    """A limit column's numbers in file order (NaN where empty); text or inf refuses the file."""
    numbers, text_cells = rows.numbers(column)
    bad = np.flatnonzero(text_cells | np.isinf(numbers))
    if bad.size:
        first = int(bad[0])
        cell = rows.frame[column].iloc[rows.kept[first]]
        raise ValueError(
            f"{source}: {key}={column!r}: row {rows.row_number(first)} holds {cell!r}, "
            f"not a finite number ({bad.size} such rows)"
        )
    return numbers


def _ffill(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).ffill().to_numpy()


def _same(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return (left == right) | (np.isnan(left) & np.isnan(right))


def median_limits(
    block: ContextMapping,
    rows: ContextRows,
    order: np.ndarray,
    target: str,
    run: np.ndarray,
    run_spans: list[tuple[int, int]],
    states: np.ndarray | None,
    line_id: str,
    use_case: UseCaseConfig,
    source: str,
) -> list[ContextInterval]:
    """One LIMITS interval per run: the median of the target over the run's productive rows ± the band
    (every row when the block has no states); a run without such a reading gets none."""
    limits = block.limits
    numbers, _ = rows.numbers(target)
    values = numbers[order]
    use = np.isfinite(values)
    if states is not None:
        codes = [n for n, name in enumerate(block.states.names) if use_case.is_productive_state(name)]
        use &= np.isin(states, codes)
    medians = pd.Series(values[use]).groupby(run[use]).median()
    intervals = []
    for n, (start, end) in enumerate(run_spans):
        if start >= end or n not in medians.index:
            continue  # a run without a productive reading of the target has no median
        centre = float(medians[n])
        half = limits.band if limits.band is not None else abs(centre) * limits.relative_band
        lower, upper = centre - half, centre + half
        text = _band_text(centre, limits.band, limits.relative_band, "run median")
        if not lower < upper:
            raise ValueError(
                f"{source}: context.limits.run_median: the target's median in the run from {iso(start)} is "
                f"{centre:g}: relative_band={limits.relative_band} of it gives no tolerance (use band: an absolute ±)"
            )
        spec = SpecLimits(target_metric=use_case.target_metric, lower=lower, upper=upper)
        intervals.append(context_interval(ContextKind.LIMITS, line_id, start, end, text, spec))
    return intervals


def _band_text(centre: float, band: float | None, relative: float | None, what: str) -> str:
    if band is not None:
        return f"{what} {centre:g} ± {band:g}"
    return f"{what} {centre:g} ± {relative * 100:g} %"
