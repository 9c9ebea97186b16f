"""Shared by the live-accuracy tests: a moto data bucket, the extrusion use case, a recorder of events."""

from __future__ import annotations

from datetime import datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from edgeloop.schemas import load_use_case
from edgeloop.schemas.compat import UTC

BUCKET = "edgeloop-live-accuracy-test"
DAY = datetime(2026, 3, 2, tzinfo=UTC)
USE_CASE = load_use_case("extrusion")  # 1 Hz, horizon 300 s, label window 30 s, hourly windows
DELAY_S = 600.0  # the landing delay the tests run with


def due_at(window_end: datetime) -> datetime:
    """The first moment a window ending at `window_end` is due."""
    return window_end + timedelta(seconds=USE_CASE.label_window_s + DELAY_S)


@pytest.fixture()
def bucket():
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield BUCKET


class Recorder:
    """An EventBridge client stand-in that keeps the entries and answers as PutEvents does."""

    def __init__(self) -> None:
        self.entries: list[dict] = []

    def put_events(self, *, Entries: list[dict]) -> dict:  # noqa: N803 (the boto3 parameter name)
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": str(i)} for i in range(len(Entries))]}
