"""Alert notices (functions/predictions/notify.py): the per-line rate limit, clears, redeliveries, the text."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.stub import Stubber
from event_queues import received
from notify_helpers import BUS, INTERVAL_S, T0, TABLE, alert, moto_account, notice_item

from edgeloop.cloud.aws import client
from edgeloop.functions.predictions.notify import (
    MAX_SUBJECT_CHARS,
    NOTICE_ITEM_RETENTION_S,
    Claim,
    Decision,
    notice_message,
    notice_subject,
    notify_alerts,
)
from edgeloop.schemas import names
from edgeloop.schemas.prediction import AlertEvent


def notify(alerts: list[AlertEvent], topic_arn: str, *, now=T0, sns=None, interval_s: int = INTERVAL_S):
    return notify_alerts(
        alerts,
        eventbridge=client("events"),
        sns=sns or client("sns"),
        table=TABLE,
        topic_arn=topic_arn,
        bus=BUS,
        now=now,
        interval_s=interval_s,
        sleep=lambda _: None,
    )


def notices(queue_url: str) -> list[dict]:
    return [{"subject": m["Subject"], "message": m["Message"]} for m in received(queue_url)]


def test_a_second_raise_within_the_interval_is_suppressed_counted_and_reported_after_it():
    with moto_account() as account:
        first = notify([alert(number=1)], account.topic_arn)
        second = notify(
            [alert(number=2, at=T0 + timedelta(minutes=1))], account.topic_arn, now=T0 + timedelta(minutes=1)
        )
        assert (first.notices_sent, second.notices_sent, second.notices_suppressed) == (1, 0, 1)
        item = notice_item("line-1")
        assert item["suppressed_raises"] == {"N": "1"}
        expires = T0 + timedelta(minutes=1, seconds=INTERVAL_S + NOTICE_ITEM_RETENTION_S)  # kept after the last alert
        assert item[names.MONITORING_TABLE_TTL_ATTRIBUTE] == {"N": str(int(expires.timestamp()))}
        after = T0 + timedelta(seconds=INTERVAL_S + 1)
        third = notify([alert(number=3, at=after)], account.topic_arn, now=after)
        assert third.notices_sent == 1
        sent = notices(account.notices_queue)
        assert [n["message"].splitlines()[1].split(",")[0] for n in sent] == [
            "Alert id gw-line-1-usl_violation-1",
            "Alert id gw-line-1-usl_violation-3",
        ]
        assert "Not notified" not in sent[0]["message"]
        assert "since the previous notice on this line: 1 raise(s), 0 clear(s)" in sent[1]["message"]
        assert notice_item("line-1")["suppressed_raises"] == {"N": "0"}  # reported, so taken off


def test_two_lines_are_limited_independently():
    with moto_account() as account:
        result = notify([alert("line-1"), alert("line-2"), alert("line-1", 2), alert("line-2", 2)], account.topic_arn)
        assert (result.notices_sent, result.notices_suppressed) == (2, 2)
        sent = notices(account.notices_queue)
        assert sorted(n["subject"] for n in sent) == [
            "edgeloop: USL violation predicted on line line-1 in 4 min 28 s",
            "edgeloop: USL violation predicted on line line-2 in 4 min 28 s",
        ]
        assert notice_item("line-1")["suppressed_raises"] == notice_item("line-2")["suppressed_raises"] == {"N": "1"}


def test_a_clear_follows_its_notified_raise_without_taking_the_slot():
    with moto_account() as account:
        notify([alert(number=1)], account.topic_arn)
        almost = T0 + timedelta(seconds=INTERVAL_S - 1)
        cleared = notify([alert(number=1, at=almost, event="clear")], account.topic_arn, now=almost)
        assert cleared.notices_sent == 1  # inside the raise's interval: a clear of a notified raise goes out
        after = T0 + timedelta(seconds=INTERVAL_S + 1)
        raised = notify([alert(number=2, at=after)], account.topic_arn, now=after)
        assert raised.notices_sent == 1  # the clear did not restart the interval
        assert [n["subject"] for n in notices(account.notices_queue)][1] == (
            "edgeloop: USL violation alert cleared on line line-1"
        )


def test_the_clear_of_a_suppressed_raise_is_suppressed_and_counted_as_a_clear():
    with moto_account() as account:
        now = T0 + timedelta(minutes=1)
        result = notify(
            [alert(number=1), alert(number=2, at=now), alert(number=2, at=now, event="clear")],
            account.topic_arn,
            now=now,
        )
        assert (result.notices_sent, result.notices_suppressed) == (1, 2)
        item = notice_item("line-1")
        assert (item["suppressed_raises"], item["suppressed_clears"]) == ({"N": "1"}, {"N": "1"})
        assert item["announced_usl_violation"] == {"S": "gw-line-1-usl_violation-1"}


def test_a_notified_raise_of_the_other_class_leaves_the_first_ones_clear_to_be_sent():
    with moto_account() as account:
        notify([alert(number=1)], account.topic_arn)
        after = T0 + timedelta(seconds=INTERVAL_S + 1)
        notify([alert(number=2, at=after, cls="lsl_violation")], account.topic_arn, now=after)
        clears = [
            alert(number=n, at=after, event="clear", cls=c) for n, c in ((1, "usl_violation"), (2, "lsl_violation"))
        ]
        assert notify(clears, account.topic_arn, now=after).notices_sent == 2
        assert [m["MessageAttributes"]["violation_class"]["Value"] for m in received(account.notices_queue)] == [
            "usl_violation",
            "lsl_violation",
            "usl_violation",
            "lsl_violation",
        ]


def test_without_an_interval_every_alert_is_noticed():
    with moto_account() as account:
        result = notify([alert(number=n) for n in range(1, 4)], account.topic_arn, interval_s=0)
        assert (result.notices_sent, result.notices_suppressed) == (3, 0)


def test_a_redelivered_alert_gets_no_second_notice_even_after_the_interval():
    with moto_account() as account:
        notify([alert(number=1)], account.topic_arn)
        later = T0 + timedelta(seconds=INTERVAL_S * 2)
        again = notify([alert(number=1)], account.topic_arn, now=later)
        assert (again.notices_sent, again.notices_suppressed, again.notices_repeated) == (0, 0, 1)
        assert len(notices(account.notices_queue)) == 1


def test_a_notice_whose_publish_failed_is_sent_on_redelivery_with_its_counts():
    with moto_account() as account:
        notify([alert(number=1)], account.topic_arn)
        notify([alert(number=2, at=T0 + timedelta(minutes=1))], account.topic_arn)  # suppressed, counted
        received(account.notices_queue)
        after = T0 + timedelta(seconds=INTERVAL_S + 1)
        failing = client("sns")
        with Stubber(failing) as stub, pytest.raises(failing.exceptions.ClientError, match="Throttl"):
            stub.add_client_error("publish", service_error_code="Throttling", http_status_code=400)
            notify([alert(number=3, at=after)], account.topic_arn, now=after, sns=failing)
        redelivered = notify([alert(number=3, at=after)], account.topic_arn, now=after + timedelta(minutes=1))
        assert redelivered.notices_sent == 1
        (sent,) = notices(account.notices_queue)
        assert "1 raise(s), 0 clear(s)" in sent["message"] and "usl_violation-3" in sent["message"]
        assert notice_item("line-1")["notice_published"] == {"BOOL": True}


def test_the_subject_stays_under_the_sns_limit_and_the_message_says_what_an_operator_needs():
    long_line = "l" + "x" * 62  # the longest Identifier
    raised = alert(long_line)
    subject = notice_subject(raised)
    assert len(subject) <= MAX_SUBJECT_CHARS < 100 and subject.endswith("...") and "\n" not in subject
    message = notice_message(alert(), Claim(Decision.SEND, 2, 1), INTERVAL_S)
    for part in (
        "USL violation alert RAISE on line line-1 (gateway gw-line-1)",
        "Predicted cold_od_average 3.3 is above the upper spec limit 3.2",
        "lead time 4 min 28 s",
        "Model extrusion-line-1 version 1.4.0 (fp32, deployment d-7)",
        "2 raise(s), 1 clear(s) (at most one raise notice per line every 15 min)",
    ):
        assert part in message, (part, message)
    cleared = notice_message(alert(event="clear", cls="lsl_violation"), Claim(Decision.SEND), INTERVAL_S)
    assert "LSL violation alert CLEAR on line line-1" in cleared and "limits 2.9 .. 3.2" in cleared
    assert "Not notified" not in cleared
