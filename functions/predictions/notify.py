"""Violation alerts onward from landing (issue 17): every landed AlertEvent to EventBridge, and SNS
notices to the operators' topic, rate-limited per line.

EventBridge gets every event, in full (the AlertEvent's JSON as the detail): it is the channel for
machines (rules, archives, other accounts). SNS is the channel for people, so it is rate-limited:

- A raise notice takes the line's notice slot: at most one per line per `interval_s`
  (use_case.monitoring.alert_notice_interval_s). The slot is a conditional UpdateItem on the
  monitoring table's item ALERT_NOTICE_KEY_PREFIX + line, so concurrent invocations cannot both send.
- A clear never takes the slot, and is sent exactly when its raise was: the item keeps, per
  violation class, the alert id of the last raise notified (`announced_<class>`). So an operator
  told of a raise is told it ended, a clear never delays the next raise's notice (a raise is worth
  more than a clear), and a flapping line still costs at most one raise notice and its clear per
  interval. A clear whose raise was not notified is suppressed like a raise. (One id per class, not
  a set: the item stays small whatever clears go missing; two gateways on one line with alerts of
  one class open at once would have the older one's clear suppressed.)
- Suppressed alerts are counted in the item (raises and clears apart) and the next notice of the
  line says how many there were; the sent notice subtracts what it reported, so alerts counted
  meanwhile are kept for the notice after.

Retries. PutEvents answers 200 with per-entry failures (FailedEntryCount); botocore's retries do
not see those. The retryable ones (InternalFailure, ThrottlingException, as the API reference
names them) are put once more after RETRY_DELAY_S; whatever still failed, and any failed call,
raises AlertEventsNotSent once the notices are done, so Lambda's retry of the invocation (async
invoke from the IoT rule; the whole batch again on the SQS route) puts them again. Retrying longer
in the function would only hold the invocation: Lambda's retry waits minutes. A redelivered
invocation lands on the same S3 keys (content digests) and puts its events again: EventBridge is at
least once anyway, and (alert_id, event, at) in the detail identifies an event for consumers. Its
notices are not sent twice: the item records the alert event that last took a notice
(`notice_event`) and whether its Publish went through, so a redelivered alert whose notice was sent
does nothing and one whose Publish failed is published then. A suppressed alert seen again on a
redelivery is counted again (the counts are "at least").

The item expires (TTL names.MONITORING_TABLE_TTL_ATTRIBUTE) NOTICE_ITEM_RETENTION_S after the line's
last alert: a clear more than that after its raise is treated as unannounced (suppressed, counted).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from edgeloop.cloud.keyed_table import CONDITION_FAILED, KeyedTable
from edgeloop.schemas import names
from edgeloop.schemas.prediction import AlertEvent, AlertEventKind
from edgeloop.schemas.training import ViolationClass

# PutEvents: Entries holds 1..10 (botocore's events model). A request's entries must total less than
# 256 KB by the EventBridge user guide ("Calculating PutEvents event entry size"); botocore's current
# model says 1 MB. The smaller bound is kept: alerts (<= 16 KB each) never need more.
MAX_ENTRIES_PER_PUT = 10
MAX_PUT_BYTES = 256 * 1024  # exclusive
RETRYABLE_PUT_ERRORS = frozenset({"InternalFailure", "ThrottlingException"})
RETRY_DELAY_S = 0.5
# SNS Publish: "Subjects must be UTF-8 text with no line breaks or control characters, and less than 100
# characters long."
MAX_SUBJECT_CHARS = 99
NOTICE_ITEM_RETENTION_S = 30 * 24 * 3600
# the notice item's attributes, by the placeholder the expressions use
ATTRIBUTES = {
    "#at": "noticed_at",  # epoch seconds of the line's last raise notice: the slot
    "#event": "notice_event",  # event_key() of the alert event that last took a notice
    "#published": "notice_published",  # its Publish went through
    # the alert id of the last notified raise of each class, until its clear is notified
    "#announced_lsl": f"announced_{ViolationClass.LSL.value}",
    "#announced_usl": f"announced_{ViolationClass.USL.value}",
    "#raises": "suppressed_raises",
    "#clears": "suppressed_clears",
    "#line": "line_id",
    "#ttl": names.MONITORING_TABLE_TTL_ATTRIBUTE,
}
NOT_THIS_EVENT = "(attribute_not_exists(#event) OR #event <> :key)"
ANNOUNCED = {ViolationClass.LSL: "#announced_lsl", ViolationClass.USL: "#announced_usl"}
CLASS_LABELS = {ViolationClass.LSL: "LSL violation", ViolationClass.USL: "USL violation"}


class Decision(Enum):
    SEND = "send"
    SUPPRESSED = "suppressed"
    REPEATED = "repeated"  # a redelivered alert whose notice was already sent


@dataclass(frozen=True)
class Claim:
    decision: Decision
    suppressed_raises: int = 0  # to report in the notice (and subtract once it is sent)
    suppressed_clears: int = 0


@dataclass
class NoticeResult:
    raised: int = 0
    cleared: int = 0
    events_put: int = 0
    notices_sent: int = 0
    notices_suppressed: int = 0
    notices_repeated: int = 0
    message_ids: list[str] = field(default_factory=list)


class AlertEventsNotSent(RuntimeError):
    """Alert events EventBridge did not take (after the retry); `result` is what was done."""

    def __init__(self, failures: Sequence[str], result: NoticeResult) -> None:
        super().__init__(f"{len(failures)} alert event(s) not put on EventBridge: " + "; ".join(failures[:5]))
        self.failures = list(failures)
        self.result = result


def event_key(alert: AlertEvent) -> str:
    """What identifies one alert event across redeliveries."""
    return f"{alert.alert_id}|{alert.event.value}|{alert.at.isoformat()}"


# --- EventBridge ---------------------------------------------------------------------------------
def alert_entry(alert: AlertEvent, bus: str) -> dict[str, str]:
    return {
        "Source": names.EVENT_SOURCE,
        "DetailType": names.ALERT_DETAIL_TYPE,
        "Detail": alert.model_dump_json(),
        "EventBusName": bus,
    }


def entry_size(entry: dict[str, Any]) -> int:
    """An entry's size as EventBridge counts it ("Calculating PutEvents event entry size"): UTF-8 bytes
    of Source, DetailType, Detail and each resource, plus 14 with a Time."""
    size = sum(len(entry.get(k, "").encode()) for k in ("Source", "DetailType", "Detail"))
    return size + sum(len(r.encode()) for r in entry.get("Resources", ())) + (14 if "Time" in entry else 0)


def entry_batches(entries: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The entries in order, in requests of at most MAX_ENTRIES_PER_PUT entries and under MAX_PUT_BYTES."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        if batch and (len(batch) == MAX_ENTRIES_PER_PUT or size + entry_size(entry) >= MAX_PUT_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size(entry)
    if batch:
        yield batch


def _put(eventbridge: Any, entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """(entry, error code, message) of the entries the call did not put; a failed call fails them all."""
    try:
        response = eventbridge.put_events(Entries=entries)
    except (BotoCoreError, ClientError) as exc:  # botocore has retried the call itself already
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        return [(entry, code, str(exc)) for entry in entries]
    if not response.get("FailedEntryCount"):
        return []
    # the response's entries are in the request's order
    return [
        (entry, result["ErrorCode"], result.get("ErrorMessage", ""))
        for entry, result in zip(entries, response["Entries"], strict=True)
        if result.get("ErrorCode")
    ]


def put_alert_events(
    eventbridge: Any, alerts: Sequence[AlertEvent], bus: str, *, sleep: Callable[[float], None] = time.sleep
) -> list[str]:
    """Put one entry per alert; what could not be put, one description each (retryable failures retried once)."""
    failures: list[str] = []
    for batch in entry_batches([alert_entry(a, bus) for a in alerts]):
        failed = _put(eventbridge, batch)
        again = [entry for entry, code, _ in failed if code in RETRYABLE_PUT_ERRORS]
        final = [f for f in failed if f[1] not in RETRYABLE_PUT_ERRORS]
        if again:
            sleep(RETRY_DELAY_S)
            final += _put(eventbridge, again)
        for entry, code, message in final:
            alert = AlertEvent.model_validate_json(entry["Detail"])
            failures.append(f"alert_id={alert.alert_id} event={alert.event.value}: {code} {message}".strip())
    return failures


# --- the per-line notice slot (DynamoDB) ---------------------------------------------------------
def _number(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}".rstrip("0").rstrip(".")}


def _counts(item: dict[str, Any]) -> tuple[int, int]:
    return tuple(int(item.get(ATTRIBUTES[k], {}).get("N", "0")) for k in ("#raises", "#clears"))  # type: ignore[return-value]


class NoticeGate(KeyedTable):
    """The monitoring table's notice items, one per line (see the module docstring)."""

    def __init__(self, table_name: str) -> None:
        super().__init__(table_name, names.MONITORING_TABLE_KEYS, what="monitoring")

    @staticmethod
    def key_of(line_id: str) -> str:
        return f"{names.ALERT_NOTICE_KEY_PREFIX}{line_id}"

    def _request(self, line_id: str, update: str, condition: str | None, values: dict) -> dict[str, Any]:
        """UpdateItem arguments naming exactly the attributes the expressions use (DynamoDB refuses unused ones)."""
        used = set(re.findall(r"#\w+", update + (condition or "")))
        request = {
            "Key": self._key(self.key_of(line_id)),
            "UpdateExpression": update,
            "ExpressionAttributeNames": {p: a for p, a in ATTRIBUTES.items() if p in used},
            "ExpressionAttributeValues": values,
        }
        return {**request, "ConditionExpression": condition} if condition else request

    def claim(self, alert: AlertEvent, now: datetime, interval_s: int) -> Claim:
        """Whether `alert` gets a notice now; SEND takes the slot (raise) or the announcement (clear)."""
        key = event_key(alert)
        ttl = int(now.timestamp()) + interval_s + NOTICE_ITEM_RETENTION_S
        values = {":key": {"S": key}, ":false": {"BOOL": False}, ":ttl": {"N": str(ttl)}, ":line": {"S": alert.line_id}}
        values[":alert_id"] = {"S": alert.alert_id}
        took, announced = (
            "SET #event = :key, #published = :false, #ttl = :ttl, #line = :line",
            ANNOUNCED[alert.violation_class],
        )
        if alert.event is AlertEventKind.RAISE:
            update = f"{took}, #at = :now, {announced} = :alert_id"
            condition = f"(attribute_not_exists(#at) OR #at <= :cutoff) AND {NOT_THIS_EVENT}"
            values |= {":now": _number(now.timestamp()), ":cutoff": _number(now.timestamp() - interval_s)}
        else:
            update = f"{took} REMOVE {announced}"
            condition = f"{announced} = :alert_id AND {NOT_THIS_EVENT}"
        request = self._request(alert.line_id, update, condition, values)
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **request,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != CONDITION_FAILED:
                raise
            old = exc.response.get("Item", {})
            if old.get(ATTRIBUTES["#event"], {}).get("S") == key:  # this alert took it on an earlier delivery
                if old.get(ATTRIBUTES["#published"], {}).get("BOOL"):
                    return Claim(Decision.REPEATED)
                return Claim(Decision.SEND, *_counts(old))
            self._count_suppressed(alert, ttl)
            return Claim(Decision.SUPPRESSED)
        return Claim(Decision.SEND, *_counts(response.get("Attributes", {})))

    def _count_suppressed(self, alert: AlertEvent, ttl: int) -> None:
        counter = "#raises" if alert.event is AlertEventKind.RAISE else "#clears"
        values = {":one": {"N": "1"}, ":ttl": {"N": str(ttl)}, ":line": {"S": alert.line_id}}
        request = self._request(alert.line_id, f"SET #ttl = :ttl, #line = :line ADD {counter} :one", None, values)
        self._client.update_item(TableName=self.table_name, **request)

    def mark_published(self, alert: AlertEvent, claim: Claim) -> bool:
        """Record that `alert`'s notice went out and take the counts it reported off the item."""
        values = {
            ":key": {"S": event_key(alert)},
            ":true": {"BOOL": True},
            ":false": {"BOOL": False},
            ":raises": {"N": str(-claim.suppressed_raises)},
            ":clears": {"N": str(-claim.suppressed_clears)},
        }
        update = "SET #published = :true ADD #raises :raises, #clears :clears"
        request = self._request(alert.line_id, update, "#event = :key AND #published = :false", values)
        return self._if_condition_holds("update_item", **request) is not None


# --- the notice --------------------------------------------------------------------------------
def _duration(seconds: float) -> str:
    sign, rest = ("-" if seconds < 0 else ""), round(abs(seconds))
    hours, minutes, secs = rest // 3600, rest % 3600 // 60, rest % 60
    parts = [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes) + [f"{secs} s"] * (bool(secs) or not rest)
    return sign + " ".join(parts[:2])


def _clock(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def notice_subject(alert: AlertEvent) -> str:
    label = CLASS_LABELS[alert.violation_class]
    if alert.event is AlertEventKind.RAISE:
        subject = f"edgeloop: {label} predicted on line {alert.line_id} in {_duration(alert.lead_time_s or 0.0)}"
    else:
        subject = f"edgeloop: {label} alert cleared on line {alert.line_id}"
    return subject if len(subject) <= MAX_SUBJECT_CHARS else subject[: MAX_SUBJECT_CHARS - 3] + "..."


def notice_message(alert: AlertEvent, claim: Claim, interval_s: int) -> str:
    label, spec = CLASS_LABELS[alert.violation_class], alert.spec
    side, limit = (
        ("above the upper", spec.upper)
        if alert.violation_class is ViolationClass.USL
        else ("below the lower", spec.lower)
    )
    model = alert.model
    lines = [
        f"{label} alert {alert.event.value.upper()} on line {alert.line_id} (gateway {alert.thing_name}).",
        f"Alert id {alert.alert_id}, raised {_clock(alert.raised_at)}.",
    ]
    if alert.event is AlertEventKind.RAISE:
        lines += [
            f"Predicted {spec.target_metric} {alert.predicted_level:.4g} is {side} spec limit {limit:.4g}.",
            f"Violation predicted for {_clock(alert.predicted_for)}: lead time {_duration(alert.lead_time_s or 0.0)} "
            f"when the gateway sent it ({alert.consecutive} predictions in a row).",
        ]
    else:
        lines += [
            f"Cleared {_clock(alert.at)} after {alert.consecutive} predictions in range; last predicted "
            f"{spec.target_metric} {alert.predicted_level:.4g} (limits {spec.lower:.4g} .. {spec.upper:.4g}).",
        ]
    lines.append(
        f"Model {model.model_id} version {model.version} ({model.precision.value}, deployment {model.deployment_id or 'unknown'})."
    )
    if claim.suppressed_raises or claim.suppressed_clears:
        lines.append(
            f"Not notified since the previous notice on this line: {claim.suppressed_raises} raise(s), "
            f"{claim.suppressed_clears} clear(s) (at most one raise notice per line every {_duration(interval_s)}). "
            f"Every alert is on EventBridge (detail-type {names.ALERT_DETAIL_TYPE!r}) and under "
            f"{names.ALERTS_PREFIX}/line={alert.line_id}/ in the data bucket."
        )
    return "\n".join(lines)


def notice_attributes(alert: AlertEvent) -> dict[str, dict[str, str]]:
    """What subscription filter policies match on (FilterPolicyScope MessageAttributes)."""
    values = {"line_id": alert.line_id, "violation_class": alert.violation_class.value, "event": alert.event.value}
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items()}


def notify_alerts(
    alerts: Sequence[AlertEvent],
    *,
    eventbridge: Any,
    sns: Any,
    table: str,
    topic_arn: str,
    bus: str,
    now: datetime,
    interval_s: int,
    sleep: Callable[[float], None] = time.sleep,
) -> NoticeResult:
    """EventBridge entries for `alerts` and their notices (module docstring); raises AlertEventsNotSent
    after the notices when EventBridge did not take them all."""
    result = NoticeResult(
        raised=sum(a.event is AlertEventKind.RAISE for a in alerts),
        cleared=sum(a.event is AlertEventKind.CLEAR for a in alerts),
    )
    failures = put_alert_events(eventbridge, alerts, bus, sleep=sleep) if alerts else []
    result.events_put = len(alerts) - len(failures)
    gate = NoticeGate(table)
    for alert in alerts:
        claim = gate.claim(alert, now, interval_s)
        if claim.decision is Decision.SUPPRESSED:
            result.notices_suppressed += 1
        elif claim.decision is Decision.REPEATED:
            result.notices_repeated += 1
        else:
            response = sns.publish(
                TopicArn=topic_arn,
                Subject=notice_subject(alert),
                Message=notice_message(alert, claim, interval_s),
                MessageAttributes=notice_attributes(alert),
            )
            gate.mark_published(alert, claim)
            result.notices_sent += 1
            result.message_ids.append(response["MessageId"])
    if failures:
        raise AlertEventsNotSent(failures, result)
    return result
