"""Which line each gateway belongs to: the thing's `line_id` attribute in the IoT registry.

The registry, set by `edgeloop gateway provision`, is the authority on lines; a gateway's own
claim in a telemetry batch or a context message is checked against it (`line_mismatch`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, Protocol

from botocore.exceptions import ClientError

from edgeloop.cloud.aws import client
from edgeloop.schemas import names

# A registered gateway rarely changes line; a few minutes of staleness after a re-provisioning is
# the price of one DescribeThing per gateway per warm container instead of one per message.
LINE_TTL_S = 300.0
# Shorter for a thing the registry does not know (or that has no line): a gateway provisioned just
# after its first message should not be refused for long.
MISSING_TTL_S = 60.0
MAX_CACHED_THINGS = 10_000  # bounds the memory a stream of unknown thing names can claim


class LineDirectory(Protocol):
    def line_of(self, thing_name: str) -> str | None:
        """The line the registry assigns to the thing; None when the thing is unknown or has no line."""


class StaticLineDirectory:
    """Lines from a mapping thing name -> line id (tests, and callers that already know the fleet)."""

    def __init__(self, lines: Mapping[str, str]) -> None:
        self.lines = dict(lines)

    def line_of(self, thing_name: str) -> str | None:
        return self.lines.get(thing_name)


class IotLineDirectory:
    """The `line_id` attribute of the thing in the IoT registry, as `edgeloop gateway provision` set it.

    Answers are cached per thing for the life of the warm container (LINE_TTL_S, MISSING_TTL_S).
    Errors other than "no such thing" (throttling, access denied) propagate: the invocation fails
    and is retried rather than quarantining good data.
    """

    def __init__(
        self,
        *,
        line_ttl_s: float = LINE_TTL_S,
        missing_ttl_s: float = MISSING_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        iot: Any = None,
    ) -> None:
        self.line_ttl_s = line_ttl_s
        self.missing_ttl_s = missing_ttl_s
        self.clock = clock
        self._iot = iot
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()
        self.lookups = 0  # DescribeThing calls made (tests check the cache with it)

    def line_of(self, thing_name: str) -> str | None:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(thing_name)
        if cached is not None and cached[1] > now:
            return cached[0]
        line = self._describe(thing_name)
        ttl = self.line_ttl_s if line is not None else self.missing_ttl_s
        with self._lock:
            if len(self._cache) >= MAX_CACHED_THINGS:
                self._cache.clear()  # crude but bounded: the next lookups refill it
            self._cache[thing_name] = (line, now + ttl)
        return line

    def _describe(self, thing_name: str) -> str | None:
        iot = self._iot if self._iot is not None else client("iot")
        self.lookups += 1
        try:
            thing = iot.describe_thing(thingName=thing_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return thing.get("attributes", {}).get(names.GATEWAY_LINE_ATTRIBUTE) or None


class WithLineDirectory:
    """Settings mixin of the functions that check a gateway's line (ingest, context).

    A handler reads its settings once per warm container, and so builds this directory once: its
    per-thing cache outlives the invocation, and clearing the handler's settings (a new container)
    clears it too.
    """

    @cached_property
    def line_directory(self) -> IotLineDirectory:
        return IotLineDirectory()


def line_mismatch(thing_name: str, claimed_line: str, lines: LineDirectory) -> str | None:
    """Why `claimed_line` is not the thing's line, or None when the registry agrees."""
    registered = lines.line_of(thing_name)
    if registered == claimed_line:
        return None
    if registered is None:
        return (
            f"cannot be checked: the IoT registry has no line for thing {thing_name!r} (the thing is not "
            f"registered or has no {names.GATEWAY_LINE_ATTRIBUTE!r} attribute; see `edgeloop gateway provision`)"
        )
    return f"differs from line {registered!r}, which the IoT registry holds for thing {thing_name!r}"
