"""Checks a payload reader applies to header values and stored arrays (shared by the tree and
linear readers): each raises ValueError saying which field or array is wrong and how."""

from __future__ import annotations

import numpy as np

from edgeloop.schemas.compat import StrEnum


def check_enum(field: str, value: str, enum: type[StrEnum]):
    """`value` as a member of `enum`, or a ValueError naming the header field and the allowed values."""
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"header {field}={value!r} is not one of {[e.value for e in enum]}") from None


def expect_array(arrays: dict, name: str, dtypes: tuple, shape: tuple | None = None) -> np.ndarray:
    """The 1-D array `name`, checked to have one of `dtypes` and, when given, exactly `shape`."""
    if name not in arrays:
        raise ValueError(f"payload has no {name!r} array")
    array = arrays[name]
    if array.dtype not in [np.dtype(d) for d in dtypes]:
        expected = [np.dtype(d).name for d in dtypes]
        raise ValueError(f"array {name!r} has dtype {array.dtype}, expected one of {expected}")
    if array.ndim != 1 or (shape is not None and array.shape != shape):
        raise ValueError(f"array {name!r} has shape {array.shape}, expected {shape or '1-D'}")
    return array


def reject_unknown(arrays: dict, known: set[str]) -> None:
    """A payload holds only the arrays its family defines: anything else is refused, not ignored."""
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise ValueError(f"payload has unknown arrays {unknown}")
