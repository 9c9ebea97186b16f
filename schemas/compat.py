"""Python 3.11 names the device code uses, for gateways on Python 3.9 and 3.10 (Debian 11, Ubuntu 22.04).

Everything the Greengrass component zips hold (schemas/, model_runtime/, the gateway and the model
runner) imports `UTC` and `StrEnum` from here instead of `datetime` and `enum`;
tests/unit/architecture/test_device_python.py keeps those files importable on Python 3.9.
"""

from __future__ import annotations

import enum
from datetime import timezone

UTC = timezone.utc  # the very object Python 3.11 calls datetime.UTC

try:
    from enum import StrEnum  # novermin: Python 3.11+ uses the standard class itself
except ImportError:  # Python 3.9 and 3.10

    class StrEnum(str, enum.Enum):
        """enum.StrEnum as Python 3.11 defines it: members are str, str() and format() give the value,
        auto() gives the lower-cased member name."""

        __str__ = str.__str__
        __format__ = str.__format__

        @staticmethod
        def _generate_next_value_(name: str, start: int, count: int, last_values: list) -> str:
            return name.lower()
