"""Semi-automatic labels: unlabeled packs, the labeling model, the review queue and its decisions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from review_packs import LOWER, T0, UPPER, packs_frame, tiny_use_case, violation_class

from edgeloop.cloud.datalake.packs import put_examples
from edgeloop.cloud.packing import label_review as review
from edgeloop.cloud.packing.examples import META_COLUMNS, assemble_examples
from edgeloop.cloud.packing.label_review import (
    LabelingModel,
    ProposalDecidedError,
    UnknownProposalError,
    decide,
    labeled_from_review,
    merge_queue,
    proposals,
    queue_line_proposals,
    score_unlabeled,
)
from edgeloop.cloud.packing.label_store import proposals_key, read_proposals, write_proposals
from edgeloop.schemas import ContextInterval, ContextKind, SpecLimits
from edgeloop.schemas.training import ProposalStatus, ReviewAction, ReviewDecision, ViolationClass
from edgeloop.schemas.use_case import LabelingConfig

BUCKET = "edgeloop-review-test"
LINE = "line-7"
THRESHOLD = 0.9
USE_CASE = tiny_use_case(labeling=LabelingConfig(auto_label_min_confidence=THRESHOLD))
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def examples_frame(x: np.ndarray, label: np.ndarray | None, *, first_window: int = 0) -> pd.DataFrame:
    return packs_frame(LINE, x, label, first_window=first_window)


def measured_and_unlabeled(seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.5, 1.5, size=200)
    measured = examples_frame(x, 2.0 + x + rng.normal(scale=0.1, size=200))
    # predictions 0.5 .. 3.5 against limits [1, 3]: far from a limit is sure, near it is not
    unlabeled = examples_frame(np.linspace(-1.5, 1.5, 31), None, first_window=1000)
    return measured, unlabeled


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# --- the packer keeps unlabeled packs ------------------------------------------------------------


def run_interval(start_s: int, end_s: int) -> ContextInterval:
    return ContextInterval(
        kind=ContextKind.RUN,
        interval_id="run-1",
        line_id=LINE,
        start=T0 + timedelta(seconds=start_s),
        end=T0 + timedelta(seconds=end_s),
        spec=SpecLimits(target_metric="quality", lower=LOWER, upper=UPPER),
    )


def curated(seconds: int, *, target_gap: range) -> pd.DataFrame:
    rows = []
    for k in range(seconds):
        rows.append({"line_id": LINE, "metric": "feed", "time_ms": int((T0.timestamp() + k) * 1000), "value": k})
        if k not in target_gap:
            rows.append(
                {"line_id": LINE, "metric": "quality", "time_ms": int((T0.timestamp() + k) * 1000), "value": 2.0}
            )
    return pd.DataFrame(rows).assign(thing_name="gw-1", seq=lambda f: np.arange(len(f)), ingest_time_ms=0)


def test_packs_without_a_measured_label_are_kept_apart_with_features():
    gapped = assemble_examples(curated(100, target_gap=range(40, 70)), [run_interval(0, 100)], USE_CASE)
    complete = assemble_examples(curated(100, target_gap=range(0)), [run_interval(0, 100)], USE_CASE)

    # label windows [end+5, end+9) of packs starting at 25..50 fall in the gap (40..70)
    unlabeled_starts = [(t - T0).total_seconds() for t in gapped.unlabeled["window_start"]]
    assert unlabeled_starts == [25, 30, 35, 40, 45, 50]
    assert gapped.stats.unlabeled == 6 == gapped.stats.dropped_label_too_sparse
    assert gapped.unlabeled["label"].isna().all() and gapped.unlabeled["label_class"].isna().all()
    np.testing.assert_allclose(gapped.unlabeled["feed__mean"], np.array(unlabeled_starts) + 4.5)
    assert list(gapped.unlabeled.columns) == list(gapped.examples.columns)
    # the labeled examples are the complete build's minus the unlabeled windows (features of the
    # target itself differ where the gap lies inside a pack)
    kept = complete.examples[~complete.examples["window_start"].isin(gapped.unlabeled["window_start"])]
    same = [*META_COLUMNS, "feed__mean"]
    pd.testing.assert_frame_equal(gapped.examples[same], kept[same].reset_index(drop=True))
    assert gapped.examples["label"].notna().all()


# --- the labeling model and the confidence threshold ---------------------------------------------


def test_labeling_model_learns_the_line_and_measures_its_residual_on_later_packs():
    measured, _ = measured_and_unlabeled()
    model = LabelingModel.fit(measured, USE_CASE.feature_names)

    predicted = model.predict(examples_frame(np.array([-1.0, 0.0, 1.0]), None))
    np.testing.assert_allclose(predicted, [1.0, 2.0, 3.0], atol=0.05)
    assert 0.05 < model.residual_std < 0.2  # the noise is 0.1
    assert LabelingModel.fit(measured.iloc[:9], USE_CASE.feature_names) is None


def test_confidence_is_the_normal_probability_of_the_predicted_class_and_splits_auto_from_review():
    measured, unlabeled = measured_and_unlabeled()
    scored = score_unlabeled(measured, unlabeled, USE_CASE)
    std = LabelingModel.fit(measured, USE_CASE.feature_names).residual_std

    for row in scored.itertuples():
        mean = row.proposed_label
        p_lsl = normal_cdf((LOWER - mean) / std)
        p_usl = 1 - normal_cdf((UPPER - mean) / std)
        expected = {"lsl_violation": p_lsl, "usl_violation": p_usl, "in_range": 1 - p_lsl - p_usl}
        assert row.proposed_class == violation_class(mean)
        assert row.confidence == pytest.approx(expected[row.proposed_class], abs=1e-9)

    queue, auto, outcome = merge_queue(None, scored, USE_CASE, NOW)

    sure = scored["confidence"] >= THRESHOLD
    assert set(auto["window_start"]) == set(scored.loc[sure, "window_start"])
    assert set(queue["proposal_id"]) == set(scored.loc[~sure, "proposal_id"])
    assert 0 < len(queue) < len(scored) and outcome.auto_labeled + outcome.pending == len(scored)
    assert (queue["confidence"] < THRESHOLD).all() and (queue["status"] == "pending").all()
    # an auto label's class is the class of its value; three classes occur
    assert (auto["label_class"] == [violation_class(v) for v in auto["label"]]).all()
    assert set(auto["label_class"]) == {"lsl_violation", "in_range", "usl_violation"}
    assert (auto["label_source"] == "auto").all()
    # the near-limit packs (prediction about 1 or 3) are the ones left to people
    assert np.all(np.minimum(abs(queue["proposed_label"] - LOWER), abs(queue["proposed_label"] - UPPER)) < 0.3)


def test_a_stricter_threshold_sends_more_packs_to_review():
    measured, unlabeled = measured_and_unlabeled()
    strict = USE_CASE.model_copy(update={"labeling": LabelingConfig(auto_label_min_confidence=0.999999)})
    scored = score_unlabeled(measured, unlabeled, USE_CASE)

    lenient_queue, _, _ = merge_queue(None, scored, USE_CASE, NOW)
    strict_queue, _, _ = merge_queue(None, scored, strict, NOW)

    assert set(lenient_queue["proposal_id"]) < set(strict_queue["proposal_id"])


def test_without_enough_measured_examples_every_pack_waits_for_review_without_a_proposal():
    measured, unlabeled = measured_and_unlabeled()
    scored = score_unlabeled(measured.iloc[:5], unlabeled, USE_CASE)
    queue, auto, _ = merge_queue(None, scored, USE_CASE, NOW)

    assert auto.empty and len(queue) == len(unlabeled)
    assert queue["proposed_label"].isna().all() and (queue["confidence"] == 0).all()


# --- the queue in S3: decisions, refusals, reruns ------------------------------------------------


def queued(s3_client) -> list:
    measured, unlabeled = measured_and_unlabeled()
    queue_line_proposals(BUCKET, LINE, measured, unlabeled, USE_CASE, now=NOW)
    return proposals(BUCKET, LINE, status=ProposalStatus.PENDING)


def decision(proposal_id: str, action=ReviewAction.ACCEPT, **correction) -> ReviewDecision:
    return ReviewDecision(proposal_id=proposal_id, action=action, reviewer="ana", decided_at=NOW, **correction)


def test_accept_takes_the_proposal_and_correct_takes_a_value_or_aviolation_class(s3):
    pending = queued(s3)
    accepted, by_value, by_class = pending[0], pending[1], pending[2]

    done = decide(BUCKET, decision(accepted.proposal_id))
    assert done.status is ProposalStatus.ACCEPTED and done.reviewer == "ana"
    assert done.final_label == accepted.proposed_label and done.final_class is accepted.proposed_class

    done = decide(BUCKET, decision(by_value.proposal_id, ReviewAction.CORRECT, value=3.81))
    assert (done.status, done.final_label, done.final_class) == (ProposalStatus.CORRECTED, 3.81, ViolationClass.USL)

    done = decide(BUCKET, decision(by_class.proposal_id, ReviewAction.CORRECT, label_class=ViolationClass.LSL))
    assert done.final_class is ViolationClass.LSL and done.final_label < LOWER
    # the value is the prediction's distribution conditioned on the class: just below the limit
    assert done.final_label > LOWER - 3 * by_class.prediction_std

    stored = {p.proposal_id: p for p in proposals(BUCKET)}  # every line, read back from S3
    assert stored[by_value.proposal_id].final_label == 3.81
    assert len(proposals(BUCKET, LINE, status=ProposalStatus.PENDING)) == len(pending) - 3


def test_unknown_and_already_decided_proposals_are_refused(s3):
    pending = queued(s3)
    decide(BUCKET, decision(pending[0].proposal_id))

    with pytest.raises(UnknownProposalError, match="proposal_id='0123456789ab' is not in the review queue"):
        decide(BUCKET, decision("0123456789ab"))
    with pytest.raises(
        ProposalDecidedError, match=f"proposal_id='{pending[0].proposal_id}' was already accepted by 'ana'"
    ):
        decide(BUCKET, decision(pending[0].proposal_id, ReviewAction.CORRECT, value=2.0))
    with pytest.raises(ValueError, match="exactly one of value or label_class"):
        decision(pending[1].proposal_id, ReviewAction.CORRECT)


def test_a_packer_rerun_is_idempotent_and_never_reopens_a_decision(s3):
    pending = queued(s3)
    first = read_proposals(BUCKET, LINE).frame
    decide(BUCKET, decision(pending[0].proposal_id, ReviewAction.CORRECT, value=1.5))

    measured, unlabeled = measured_and_unlabeled()
    outcome = queue_line_proposals(BUCKET, LINE, measured, unlabeled, USE_CASE, now=NOW + timedelta(days=1))

    assert (outcome.newly_queued, outcome.decided, outcome.pending) == (0, 1, len(pending) - 1)
    again = read_proposals(BUCKET, LINE).frame.set_index("proposal_id")
    assert again.loc[pending[0].proposal_id, "status"] == "corrected"
    assert again.loc[pending[0].proposal_id, "final_label"] == 1.5
    # pending proposals keep when they were first queued
    still = first.set_index("proposal_id").drop(index=pending[0].proposal_id)
    assert (again.loc[still.index, "proposed_at"] == still["proposed_at"]).all()
    assert set(again.index) == set(first["proposal_id"])


def test_a_decision_made_while_the_packer_rewrites_the_queue_survives(s3, monkeypatch):
    pending = queued(s3)
    real_write = review.write_proposals
    calls = []

    def reviewer_gets_there_first(bucket, line_id, frame, *, etag):
        calls.append(etag)
        if len(calls) == 1:  # between the packer's read and its write, a reviewer decides
            decide(BUCKET, decision(pending[0].proposal_id))
        return real_write(bucket, line_id, frame, etag=etag)

    monkeypatch.setattr(review, "write_proposals", reviewer_gets_there_first)
    measured, unlabeled = measured_and_unlabeled()
    queue_line_proposals(BUCKET, LINE, measured, unlabeled, USE_CASE, now=NOW)

    assert len(calls) == 3  # the packer's stale write (refused), the reviewer's, the packer's re-read retry
    assert read_proposals(BUCKET, LINE).frame.set_index("proposal_id").loc[pending[0].proposal_id, "status"] == (
        "accepted"
    )


def test_a_write_with_a_stale_etag_is_refused(s3):
    queued(s3)
    stored = read_proposals(BUCKET, LINE)
    assert write_proposals(BUCKET, LINE, stored.frame, etag=stored.etag)
    assert not write_proposals(BUCKET, LINE, stored.frame, etag=stored.etag)
    assert not write_proposals(BUCKET, LINE, stored.frame, etag=None)  # exists already
    assert s3.head_object(Bucket=BUCKET, Key=proposals_key(LINE))


def test_decided_and_auto_labels_flow_out_as_examples_and_measurements_win(s3):
    pending = queued(s3)
    decide(BUCKET, decision(pending[0].proposal_id))
    decide(BUCKET, decision(pending[1].proposal_id, ReviewAction.CORRECT, value=3.81))

    labeled = labeled_from_review(BUCKET, LINE, USE_CASE)

    assert list(labeled.columns) == [*META_COLUMNS, *USE_CASE.feature_names]
    reviewed = labeled[labeled["label_source"] == "reviewed"].set_index("window_start")
    assert len(reviewed) == 2 and reviewed["label"].notna().all()
    assert reviewed.loc[pd.Timestamp(pending[1].window_start), "label"] == 3.81
    assert reviewed.loc[pd.Timestamp(pending[1].window_start), "label_class"] == "usl_violation"
    auto = labeled[labeled["label_source"] == "auto"]
    assert len(auto) > 0 and str(labeled["window_start"].dtype) == "datetime64[ns, UTC]"
    assert not set(labeled["window_start"]) & {pd.Timestamp(p.window_start) for p in pending[2:]}  # pending stay out

    # a late measurement of one reviewed window and one auto-labeled window: the measurement wins
    measured_now = labeled[labeled["window_start"].isin([pending[0].window_start, auto["window_start"].iloc[0]])]
    put_examples(BUCKET, LINE, measured_now.assign(label_source="measured"))
    after = labeled_from_review(BUCKET, LINE, USE_CASE)
    assert len(after) == len(labeled) - 2
