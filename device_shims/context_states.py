"""Machine states of a recording (ContextKind.STATE), from the mapping's `context.states` block.

Per row, the first rule that matches, else `default`; the first `changeover_min` minutes after a run
change are changeover whatever the rules say; a spell shorter than `min_duration_s` merges into the
state before it (one flickering reading makes no interval).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.schemas import ContextInterval, ContextKind

from .context_rows import ContextRows, context_interval, spans, value_starts
from .replay_mapping import CHANGEOVER, Condition, ContextMapping

_OPS = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def machine_states(
    block: ContextMapping,
    rows: ContextRows,
    order: np.ndarray,
    t: np.ndarray,
    run: np.ndarray,
    run_first: np.ndarray,
    end_ms: int,
    source: str,
) -> np.ndarray:
    """State index (into states.names) per time-ordered row."""
    spec = block.states
    index = {name: n for n, name in enumerate(spec.names)}
    states = np.full(len(t), index[spec.default], dtype=np.int64)
    for n in range(len(spec.rules) - 1, -1, -1):  # the first matching rule is applied last
        rule = spec.rules[n]
        match = np.ones(len(t), dtype=bool)
        for condition in rule.when:
            match &= _condition(condition, rows, f"context.states.rules[{n}].when", source)[order]
        states[match] = index[rule.state]
    if spec.changeover_min is not None and len(run_first) > 1:
        run_start = t[run_first][run]
        states[(run > 0) & (t - run_start < spec.changeover_min * 60_000)] = index[CHANGEOVER]
    return _debounce(states, t, end_ms, int(spec.min_duration_s * 1000))


def _condition(condition: Condition, rows: ContextRows, key: str, source: str) -> np.ndarray:
    op = _OPS[condition.op]
    if isinstance(condition.value, str):
        text, missing = rows.text(condition.column)
        equal = (text == condition.value).fillna(False).to_numpy(dtype=bool)
        return (equal if condition.op == "==" else ~equal) & ~missing
    numbers, text_cells = rows.numbers(condition.column)
    finite = ~np.isnan(numbers)
    if not finite.any() and text_cells.any():
        first = int(np.flatnonzero(text_cells)[0])
        cell = rows.frame[condition.column].iloc[rows.kept[first]]
        raise ValueError(
            f"{source}: {key}={condition.text()!r}: column {condition.column!r} holds no number "
            f"(row {rows.row_number(first)}: {cell!r}); compare text with == or !="
        )
    with np.errstate(invalid="ignore"):
        return op(numbers, condition.value) & finite


def _debounce(states: np.ndarray, t: np.ndarray, end_ms: int, min_ms: int) -> np.ndarray:
    """Spells shorter than min_ms take the state of the spell before them (the first: after them)."""
    if min_ms <= 0 or len(states) < 2:
        return states
    first = value_starts(states)
    ends = np.append(t[first[1:]], end_ms)
    short = (ends - t[first]) < min_ms
    if not short.any():
        return states
    if short.all():
        short[0] = False  # flickering from start to end: the first state stands for all
    spell = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(states))))
    merged = pd.Series(np.where(short[spell], np.nan, states.astype(float))).ffill().bfill()
    return merged.to_numpy().astype(np.int64)


def state_intervals(
    block: ContextMapping, states: np.ndarray, t: np.ndarray, end_ms: int, line_id: str
) -> list[ContextInterval]:
    """One STATE interval per spell of a state (`states` per time-ordered row, from machine_states)."""
    state_first = value_starts(states)
    return [
        context_interval(ContextKind.STATE, line_id, start, end, block.states.names[states[first]])
        for (start, end), first in zip(spans(t, state_first, end_ms), state_first, strict=True)
        if start < end
    ]
