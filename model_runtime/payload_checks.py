"""Checks a payload reader applies to header values and stored arrays (shared by the tree and
linear readers): each raises ValueError saying which field or array is wrong and how."""

from __future__ import annotations

import io
import math
import zipfile

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


# --- bounds of the npz container, checked before numpy allocates anything ---------------------------

# A legitimate payload is far smaller (300 trees of depth 10 store < 20 MB of arrays); numpy allocates
# each array from its .npy header's shape, so a small deflated member can declare gigabytes.
MAX_PAYLOAD_ARRAYS = 32
MAX_PAYLOAD_DECODED_BYTES = 64 << 20  # all members together, decompressed
_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_READ = 64 << 10  # a .npy header is padded to a few hundred bytes; numpy itself caps it


def check_npz_bounds(data: bytes, *, max_decoded_bytes: int = MAX_PAYLOAD_DECODED_BYTES) -> None:
    """Refuse (ValueError with the reason) an npz whose declared sizes exceed the bounds, reading only the
    zip central directory and each member's .npy header: nothing is decompressed beyond those headers.

    Each member's decompressed size (central directory) must agree with its header's shape x itemsize,
    its dtype must be a plain one (no objects), and the members together must stay under
    `max_decoded_bytes`. zipfile never inflates a member past its declared size, so these bound memory.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            if len(members) > MAX_PAYLOAD_ARRAYS:
                raise ValueError(f"payload container has {len(members)} members, at most {MAX_PAYLOAD_ARRAYS} allowed")
            total = sum(member.file_size for member in members)
            if total > max_decoded_bytes:
                raise ValueError(
                    f"payload container declares {total} decompressed bytes ({len(data)} compressed), "
                    f"at most {max_decoded_bytes} allowed"
                )
            for member in members:
                _check_member(archive, member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        raise ValueError(f"payload container is unreadable ({type(exc).__name__}: {exc})") from None


def _check_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    with archive.open(member) as stream:
        head = stream.read(min(member.file_size, _NPY_HEADER_READ))
    if not head.startswith(_NPY_MAGIC) or len(head) < 10:
        raise ValueError(f"payload member {member.filename!r} is not a .npy array")
    try:
        handle = io.BytesIO(head)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ValueError(f"payload member {member.filename!r} has an unreadable .npy header ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"payload member {member.filename!r} declares dtype {dtype}, which holds objects")
    declared = math.prod(shape) * dtype.itemsize
    if handle.tell() + declared != member.file_size:
        raise ValueError(
            f"payload member {member.filename!r} declares shape {shape} of {dtype} ({declared} bytes), "
            f"its stored size is {member.file_size - handle.tell()} bytes"
        )
