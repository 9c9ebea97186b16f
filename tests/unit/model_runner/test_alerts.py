"""Violation alerts: debounced raise, hysteresis clear, a class switch, a restart in the middle."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from edgeloop.greengrass_components.model_runner.alerts import ViolationAlerter
from edgeloop.schemas.compat import UTC
from edgeloop.schemas.prediction import AlertEventKind, PredictionMessage, decode_alert

START = datetime(2026, 1, 1, tzinfo=UTC)
STRIDE_S = 30
HORIZON_S = 300
LATENCY_S = 2
SPEC = {"target_metric": "cold_od_average", "lower": 2.9, "upper": 3.2}
CLASS = {"L": "lsl_violation", "U": "usl_violation", "i": "in_range", "?": None}


def prediction(index: int, code: str) -> PredictionMessage:
    """The index-th prediction of a line (one every stride), in class CLASS[code] ("?": no limits known)."""
    made_at = START + timedelta(seconds=index * STRIDE_S)
    sent_at = made_at + timedelta(seconds=LATENCY_S)
    return PredictionMessage(
        thing_name="gw-line-1",
        line_id="line-1",
        model={"model_id": "m", "version": "1.0.0", "precision": "fp32", "decision_margin": 0.1},
        target_metric="cold_od_average",
        made_at=made_at,
        horizon_s=HORIZON_S,
        label_window_s=30,
        predicted_level={"L": 2.8, "U": 3.3, "i": 3.05, "?": 3.3}[code],
        violation_class=CLASS[code],
        spec=SPEC if code != "?" else None,
        sent_at=sent_at,
        lead_time_s=HORIZON_S - LATENCY_S,
    )


def run(alerter: ViolationAlerter, codes: str, first_index: int = 0) -> list[tuple[int, str, str]]:
    """(prediction index, raise/clear, class) of every event the sequence decides."""
    events = []
    for offset, code in enumerate(codes):
        for event in alerter.observe(prediction(first_index + offset, code)):
            events.append((first_index + offset, event.event.value, event.violation_class.value))
    return events


def test_one_prediction_over_the_limit_raises_nothing():
    alerter = ViolationAlerter(raise_after=3, clear_after=2)
    assert run(alerter, "iUUiUUi?U") == [], "never 3 in a row"


def test_raise_after_n_in_a_row_with_the_lead_time_of_the_first():
    alerter = ViolationAlerter(raise_after=3, clear_after=2)
    events = []
    for index, code in enumerate("iiUUU"):
        events += alerter.observe(prediction(index, code))
    (raised,) = events
    assert raised.event is AlertEventKind.RAISE and raised.violation_class.value == "usl_violation"
    assert raised.consecutive == 3 and raised.at == prediction(4, "U").made_at
    # the streak's first prediction (index 2) foresaw the violation earliest; sent with the third (index 4)
    assert raised.predicted_for == prediction(2, "U").predicted_for
    assert raised.lead_time_s == HORIZON_S - 2 * STRIDE_S - LATENCY_S
    assert decode_alert(raised.model_dump_json().encode()) == raised


def test_hysteresis_clears_only_after_m_in_range_in_a_row():
    alerter = ViolationAlerter(raise_after=2, clear_after=3)
    assert run(alerter, "UU" + "iiU" + "ii" + "?" + "i") == [
        (1, "raise", "usl_violation"),
        (8, "clear", "usl_violation"),
    ], "an in-class prediction restarts the count; an unclassified one neither counts nor resets"


def test_the_clear_names_the_alert_it_ends():
    alerter = ViolationAlerter(raise_after=1, clear_after=1)
    raised = alerter.observe(prediction(0, "L"))[0]
    cleared = alerter.observe(prediction(1, "i"))[0]
    assert cleared.event is AlertEventKind.CLEAR and cleared.alert_id == raised.alert_id
    assert cleared.raised_at == raised.raised_at and cleared.lead_time_s is None
    assert alerter.open_class is None


def test_the_other_violation_class_clears_and_raises():
    alerter = ViolationAlerter(raise_after=2, clear_after=5)
    assert run(alerter, "UULUL" + "L") == [
        (1, "raise", "usl_violation"),
        (5, "clear", "usl_violation"),
        (5, "raise", "lsl_violation"),
    ]


def test_a_restart_in_the_middle_neither_repeats_nor_forgets(tmp_path):
    path = tmp_path / "alerts.json"
    first = ViolationAlerter(raise_after=2, clear_after=2, path=path)
    assert run(first, "iU") == []
    second = ViolationAlerter(raise_after=2, clear_after=2, path=path)  # restart inside the streak
    assert run(second, "UU", first_index=2) == [(2, "raise", "usl_violation")]
    third = ViolationAlerter(raise_after=2, clear_after=2, path=path)  # restart with the alert open
    assert third.open_class.value == "usl_violation"
    assert run(third, "i", first_index=4) == []
    fourth = ViolationAlerter(raise_after=2, clear_after=2, path=path)  # restart inside the clearing count
    assert run(fourth, "i", first_index=5) == [(5, "clear", "usl_violation")]


def test_a_torn_state_file_starts_closed(tmp_path):
    path = tmp_path / "alerts.json"
    path.write_text("{")
    assert ViolationAlerter(path=path).open_class is None


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_counts_must_be_whole_and_positive(value):
    with pytest.raises(ValueError, match=f"raise_after={value!r}"):
        ViolationAlerter(raise_after=value)
