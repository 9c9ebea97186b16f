"""When each append to the buffer happened, kept in memory only: what tells live data from backlog,
and how long a held sample has waited (the flush policy).

Data appended within the last few seconds (the live window) is live; after a restart nothing is,
so everything buffered is backlog until the next append.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

# Data appended within this many seconds is live: it goes out before the backlog.
DEFAULT_LIVE_WINDOW_S = 10.0


class AppendMarks:
    """(clock time, first seq) of each append call, oldest first, kept for the widest live window asked."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque()
        self._kept_s = DEFAULT_LIVE_WINDOW_S

    def __len__(self) -> int:
        return len(self._marks)

    def mark(self, seq_first: int) -> None:
        now = self._clock()
        marks = self._marks
        marks.append((now, seq_first))
        while marks[0][0] < now - self._kept_s:  # bounded memory even if nobody asks for live data
            marks.popleft()

    def keep_for(self, seconds: float) -> None:
        """Keep append times at least `seconds` (they are kept for the widest window asked so far)."""
        self._kept_s = max(self._kept_s, seconds)

    def appended_at(self, seq: int) -> float | None:
        """When the append that stored `seq` happened, or None when that is longer ago than kept."""
        found = None
        for appended_at, seq_first in self._marks:
            if seq_first > seq:
                break
            found = appended_at
        return found

    def first_seq_within(self, window_s: float) -> int | None:
        """The first seq appended within the last window_s seconds, or None when nothing was."""
        self._kept_s = max(self._kept_s, window_s)
        horizon = self._clock() - window_s
        for appended_at, seq_first in self._marks:
            if appended_at >= horizon:
                return seq_first
        return None
