"""Where a simulated gateway stands in its simulation, so that a restart resumes instead of repeating.

The journal is written ahead of every append to the durable buffer: the simulated span
[before_s, after_s) about to be appended and the buffer's next sequence number before it. On
restart the buffer decides: if its next sequence number moved past `seq_before`, that append
committed and the simulation resumes at `after_s`; otherwise at `before_s`. A kill between the two
writes therefore neither repeats a reading nor skips one. (An append whose samples were all refused
does not move the sequence; simulating it again refuses the same samples again.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger("edgeloop.simulated_gateway")


class PositionJournal:
    """The position of one simulation (seed, start, line) in the buffer of one gateway."""

    def __init__(self, path: Path, *, seed: int, sim_start_ms: int, line_id: str) -> None:
        self.path = Path(path)
        self.identity = {"seed": seed, "sim_start_ms": sim_start_ms, "line_id": line_id}

    def resume_s(self, next_seq: int) -> int:
        """Simulated seconds since the start already in the buffer (0 for a new simulation)."""
        try:
            entry = json.loads(self.path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ValueError(f"simulation position {str(self.path)!r} is unreadable: {exc}") from exc
        if not isinstance(entry, dict) or {k: entry.get(k) for k in self.identity} != self.identity:
            log.warning(
                "%s describes another simulation than %s: starting from the beginning", self.path, self.identity
            )
            return 0
        try:
            before_s, after_s, seq_before = (int(entry[k]) for k in ("before_s", "after_s", "seq_before"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"simulation position {str(self.path)!r} lacks {exc}") from exc
        return after_s if next_seq > seq_before else before_s

    def record(self, before_s: int, after_s: int, seq_before: int) -> None:
        """Before appending the span [before_s, after_s) to a buffer whose next sequence is `seq_before`."""
        entry = {**self.identity, "before_s": before_s, "after_s": after_s, "seq_before": seq_before}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, self.path)
