"""Shared field types for every contract."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from .compat import UTC

_THING_NAME = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")  # AWS IoT thing-name alphabet
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
S3_URI_PATTERN = r"^s3://([^/]+)/(.+)$"  # a bucket and a non-empty key
_S3_URI = re.compile(S3_URI_PATTERN)


def _thing_name(value: str) -> str:
    if not _THING_NAME.match(value):
        raise ValueError(f"thing name {value!r} must match {_THING_NAME.pattern}")
    return value


def _semver(value: str) -> str:
    if not _SEMVER.match(value):
        raise ValueError(f"version {value!r} is not MAJOR.MINOR.PATCH")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value.astimezone(UTC)


ThingName = Annotated[str, AfterValidator(_thing_name)]
SemVer = Annotated[str, AfterValidator(_semver)]
UtcDatetime = Annotated[datetime, AfterValidator(_aware)]
# Line ids, use cases, roles: what fits an S3 partition value, a topic level and a resource name.
IDENTIFIER_BODY = r"[a-z0-9][a-z0-9_-]{0,62}"
IDENTIFIER = re.compile(rf"^{IDENTIFIER_BODY}$")
Identifier = Annotated[str, Field(pattern=IDENTIFIER.pattern)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
S3ObjectUri = Annotated[str, Field(pattern=S3_URI_PATTERN)]


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str, *, what: str = "uri") -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); anything else is refused, naming `what` and the value."""
    match = _S3_URI.match(uri) if isinstance(uri, str) else None
    if match is None:
        raise ValueError(f"{what}={uri!r} is not an s3:// URI: not s3://bucket/key")
    return match.group(1), match.group(2)


def semver_key(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in _semver(version).split("."))
    return major, minor, patch


class Contract(BaseModel):
    """Base of every message, record and manifest: strict about unknown fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def validation_problems(
    exc: ValidationError,
    *,
    name_of: Callable[[str], str] = str,
    root: str = "<document>",
    missing: str | None = None,
    max_value_chars: int | None = None,
) -> str:
    """Every problem of `exc` as `name=value: message`, joined by "; ": how edgeloop names the field
    and the value it refuses. `name_of` maps a field path ("a.b", or `root` for the document itself)
    to the name the user knows (an environment variable, a context key); with `missing`, an absent
    field reads "name <missing>" (e.g. "is not set"); `max_value_chars` cuts long values."""
    problems = []
    for error in exc.errors():
        name = name_of(".".join(str(part) for part in error["loc"]) or root)
        if missing is not None and error["type"] == "missing":
            problems.append(f"{name} {missing}")
            continue
        value = repr(error.get("input"))
        if max_value_chars is not None:
            value = value[:max_value_chars]
        problems.append(f"{name}={value}: {error['msg']}")
    return "; ".join(problems)
