"""Semi-automatic labels: a labeling model proposes targets for packs whose target was not measured.

The labeling model is a ridge regression on the line's measured examples (standardized features,
missing values at the mean), cheap and deterministic; its residual std comes from a time-ordered
holdout (the newest share of the measured examples), so it reflects how well the past predicts
later packs. A pack's class probabilities follow from N(prediction, residual_std^2) against the
pack's spec limits. When the prediction's class is at least `labeling.auto_label_min_confidence`
likely it becomes an auto label; otherwise it waits in the review queue (data_access) for a person
to accept or correct it. A threshold above one half means only the class containing the prediction
can qualify, so an auto label's value and class always agree.

Reruns are idempotent: decided proposals are never touched again; pending ones are re-scored.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from edgeloop.cloud import s3
from edgeloop.cloud.datalake.packs import examples_key
from edgeloop.cloud.packing.labels import classify
from edgeloop.schemas import SpecLimits, UseCaseConfig
from edgeloop.schemas.training import (
    LabelProposal,
    LabelSource,
    ProposalStatus,
    ReviewAction,
    ReviewDecision,
    ViolationClass,
)

from .label_store import get_auto_labels, put_auto_labels, read_proposals, review_lines, write_proposals

MIN_MEASURED_EXAMPLES = 10  # fewer and the labeling model's residual std means nothing
HOLDOUT_SHARE = 0.2
RIDGE_ALPHA = 1.0
WRITE_ATTEMPTS = 5  # conditional rewrites of the queue before giving up on a busy line

PROPOSAL_COLUMNS = tuple(LabelProposal.model_fields)
_OPTIONAL_FLOATS = ("proposed_label", "prediction_std", "final_label")
_OPTIONAL_TEXT = ("proposed_class", "reviewer", "final_class")


class UnknownProposalError(LookupError):
    pass


class ProposalDecidedError(ValueError):
    pass


# --- the labeling model --------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelingModel:
    """Ridge regression on standardized features; NaN features count as the training mean."""

    feature_names: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float
    residual_std: float

    @classmethod
    def fit(cls, measured: pd.DataFrame, feature_names: list[str]) -> LabelingModel | None:
        """Fit on a line's measured examples; None when there are fewer than MIN_MEASURED_EXAMPLES."""
        if len(measured) < MIN_MEASURED_EXAMPLES:
            return None
        ordered = measured.sort_values(["window_end", "window_start"], kind="stable")
        X = ordered[list(feature_names)].to_numpy(dtype=np.float64)
        y = ordered["label"].to_numpy(dtype=np.float64)
        n_holdout = max(1, int(np.ceil(len(y) * HOLDOUT_SHARE)))
        earlier = _fit_ridge(X[:-n_holdout], y[:-n_holdout])
        holdout_error = earlier.predict_array(X[-n_holdout:]) - y[-n_holdout:]
        # a perfect holdout fit would make every class certain; keep the std strictly positive
        floor = 1e-9 * max(1.0, float(np.abs(y).max()))
        residual_std = max(float(np.sqrt(np.mean(holdout_error**2))), floor)
        final = _fit_ridge(X, y)
        return cls(tuple(feature_names), final.center, final.scale, final.weights, final.intercept, residual_std)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        X = frame[list(self.feature_names)].to_numpy(dtype=np.float64)
        return _Ridge(self.center, self.scale, self.weights, self.intercept).predict_array(X)


@dataclass(frozen=True)
class _Ridge:
    center: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def predict_array(self, X: np.ndarray) -> np.ndarray:
        Z = np.nan_to_num((X - self.center) / self.scale, nan=0.0, posinf=0.0, neginf=0.0)
        return Z @ self.weights + self.intercept


def _fit_ridge(X: np.ndarray, y: np.ndarray) -> _Ridge:
    with warnings.catch_warnings():  # all-NaN columns: mean and std are NaN, replaced below
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nan_to_num(np.nanmean(X, axis=0), nan=0.0)
        scale = np.nanstd(X, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    Z = np.nan_to_num((X - center) / scale, nan=0.0, posinf=0.0, neginf=0.0)
    intercept = float(y.mean())
    weights = np.linalg.solve(Z.T @ Z + RIDGE_ALPHA * np.eye(Z.shape[1]), Z.T @ (y - intercept))
    return _Ridge(center, scale, weights, intercept)


# numpy has no erf; these run in the metric packer's Lambda, whose layers carry no scipy
_erfc = np.vectorize(math.erfc, otypes=[float])


def _normal_cdf(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * _erfc(-np.asarray(z, dtype=np.float64) / math.sqrt(2.0))


def _normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) if math.isfinite(z) else 0.0


def truncated_normal_mean(mean: float, std: float, low: float, high: float) -> float:
    """Mean of N(mean, std^2) restricted to [low, high]; NaN when the interval has no mass numerically."""
    a, b = (low - mean) / std, (high - mean) / std
    mass = float(_normal_cdf(b) - _normal_cdf(a))
    if not mass > 0:
        return math.nan
    return mean + std * (_normal_pdf(a) - _normal_pdf(b)) / mass


def class_probabilities(mean: np.ndarray, std: float, lower: np.ndarray, upper: np.ndarray) -> dict[str, np.ndarray]:
    """P(LSL), P(in range), P(USL) per pack for a target distributed N(mean, std^2)."""
    p_lsl = _normal_cdf((np.asarray(lower) - mean) / std)
    p_usl = _normal_cdf((mean - np.asarray(upper)) / std)
    p_in = np.clip(1.0 - p_lsl - p_usl, 0.0, 1.0)
    return {ViolationClass.LSL.value: p_lsl, ViolationClass.IN_RANGE.value: p_in, ViolationClass.USL.value: p_usl}


def proposal_id(line_id: str, window_start: pd.Timestamp, window_end: pd.Timestamp) -> str:
    """Stable per line and window, so a rerun of the packer finds the proposal it made before."""
    text = f"{line_id}|{window_start.isoformat()}|{window_end.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- scoring and merging (pure) ------------------------------------------------------------------


def score_unlabeled(measured: pd.DataFrame, unlabeled: pd.DataFrame, use_case: UseCaseConfig) -> pd.DataFrame:
    """The unlabeled packs with proposal_id, proposed_label, proposed_class, prediction_std, confidence."""
    model = LabelingModel.fit(measured, use_case.feature_names)
    scored = unlabeled.reset_index(drop=True).copy()
    scored["proposal_id"] = [
        proposal_id(line, start, end)
        for line, start, end in zip(scored["line_id"], scored["window_start"], scored["window_end"], strict=True)
    ]
    if model is None or scored.empty:
        scored["proposed_label"] = np.nan
        scored["proposed_class"] = None
        scored["prediction_std"] = np.nan
        scored["confidence"] = 0.0
        return scored
    predicted = model.predict(scored)
    lower, upper = scored["spec_lower"].to_numpy(np.float64), scored["spec_upper"].to_numpy(np.float64)
    probabilities = class_probabilities(predicted, model.residual_std, lower, upper)
    order = list(probabilities)  # LSL, in range, USL
    which = np.select([predicted < lower, predicted > upper], [0, 2], 1)
    scored["proposed_label"] = predicted
    scored["proposed_class"] = np.array(order, dtype=object)[which]
    scored["prediction_std"] = model.residual_std
    scored["confidence"] = np.stack([probabilities[c] for c in order])[which, np.arange(len(which))]
    return scored


@dataclass(frozen=True)
class QueueOutcome:
    """What one packer run did to a line's labels; the handler reports these as metrics."""

    auto_labeled: int
    pending: int
    newly_queued: int
    withdrawn: int  # pending proposals whose pack was auto-labeled, measured or is gone
    decided: int


def merge_queue(
    stored: pd.DataFrame | None, scored: pd.DataFrame, use_case: UseCaseConfig, now: datetime
) -> tuple[pd.DataFrame, pd.DataFrame, QueueOutcome]:
    """(new queue, auto-label examples, counts): decided rows kept as they are, the rest re-scored."""
    features = use_case.feature_names
    stored = _empty_queue(features) if stored is None else stored
    decided = stored[stored["status"] != ProposalStatus.PENDING.value]
    was_pending = stored[stored["status"] == ProposalStatus.PENDING.value]
    candidates = scored[~scored["proposal_id"].isin(decided["proposal_id"])]
    confident = candidates["confidence"] >= use_case.labeling.auto_label_min_confidence
    auto = _as_examples(candidates[confident], "proposed_label", "proposed_class", LabelSource.AUTO, features)
    queued = _as_queue_rows(candidates[~confident], was_pending, now, features)
    queue = pd.concat([decided[list(queued.columns)], queued], ignore_index=True)
    queue = _normalized(queue.sort_values(["window_start", "proposal_id"], kind="stable").reset_index(drop=True))
    outcome = QueueOutcome(
        auto_labeled=len(auto),
        pending=len(queued),
        newly_queued=int((~queued["proposal_id"].isin(was_pending["proposal_id"])).sum()),
        withdrawn=int((~was_pending["proposal_id"].isin(queued["proposal_id"])).sum()),
        decided=len(decided),
    )
    return queue, auto, outcome


def _as_queue_rows(
    pending: pd.DataFrame, was_pending: pd.DataFrame, now: datetime, features: list[str]
) -> pd.DataFrame:
    # keep when a proposal was first queued: a re-scored proposal is not a new one
    first_seen = dict(zip(was_pending["proposal_id"], was_pending["proposed_at"], strict=True))
    rows = pending.assign(
        status=ProposalStatus.PENDING.value,
        proposed_at=[first_seen.get(pid, pd.Timestamp(now)) for pid in pending["proposal_id"]],
        reviewer=None,
        decided_at=pd.NaT,
        final_label=np.nan,
        final_class=None,
    )
    return _normalized(rows[[*PROPOSAL_COLUMNS, *features]])


def _as_examples(
    rows: pd.DataFrame, label_column: str, class_column: str, source: LabelSource, features: list[str]
) -> pd.DataFrame:
    """Rows in the packer's example layout, labeled from the given columns."""
    frame = pd.DataFrame(
        {
            "line_id": rows["line_id"].astype(str),
            "run_id": rows["run_id"].astype(str),
            "window_start": _utc(rows["window_start"]),
            "window_end": _utc(rows["window_end"]),
            "label": rows[label_column].astype(np.float64),
            "label_class": rows[class_column].astype(str),
            "label_source": source.value,
            "spec_lower": rows["spec_lower"].astype(np.float64),
            "spec_upper": rows["spec_upper"].astype(np.float64),
        }
    )
    return pd.concat([frame, rows[features].astype(np.float64)], axis=1).reset_index(drop=True)


def _empty_queue(features: list[str]) -> pd.DataFrame:
    return _normalized(pd.DataFrame({column: [] for column in (*PROPOSAL_COLUMNS, *features)}))


def _normalized(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the rows, so every rewrite of the queue has one Parquet schema."""
    frame = frame.copy()
    for column in ("window_start", "window_end", "proposed_at", "decided_at"):
        frame[column] = _utc(frame[column])
    for column in (*_OPTIONAL_FLOATS, "spec_lower", "spec_upper", "confidence"):
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype(np.float64)
    for column in (*_OPTIONAL_TEXT, "proposal_id", "line_id", "run_id", "status"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _utc(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column, utc=True).dt.as_unit("ns")


# --- the queue in the data bucket ----------------------------------------------------------------


def queue_line_proposals(
    bucket: str,
    line_id: str,
    measured: pd.DataFrame,
    unlabeled: pd.DataFrame,
    use_case: UseCaseConfig,
    *,
    now: datetime | None = None,
) -> QueueOutcome:
    """Score a line's unlabeled packs, store the confident ones as auto labels, queue the rest."""
    now = now or datetime.now(UTC)
    scored = score_unlabeled(measured, unlabeled, use_case)
    for _ in range(WRITE_ATTEMPTS):
        stored = read_proposals(bucket, line_id)
        queue, auto, outcome = merge_queue(stored.frame, scored, use_case, now)
        nothing_to_keep = stored.etag is None and queue.empty  # no queue object for lines that never need one
        if nothing_to_keep or write_proposals(bucket, line_id, queue, etag=stored.etag):
            put_auto_labels(bucket, line_id, auto)
            return outcome
    raise RuntimeError(f"line {line_id!r}: the review queue changed under {WRITE_ATTEMPTS} rewrites in a row")


def proposals(bucket: str, line_id: str | None = None, *, status: ProposalStatus | None = None) -> list[LabelProposal]:
    """The queue of one line (or of every line), optionally only proposals with `status`."""
    found = []
    for line in [line_id] if line_id else review_lines(bucket):
        frame = read_proposals(bucket, line).frame
        if frame is None:
            continue
        if status is not None:
            frame = frame[frame["status"] == status.value]
        found.extend(_to_proposal(row) for row in frame.to_dict("records"))
    return found


def decide(bucket: str, decision: ReviewDecision, *, line_id: str | None = None) -> LabelProposal:
    """Apply a reviewer's decision to a pending proposal; refuses unknown or already decided ones."""
    lines = [line_id] if line_id else review_lines(bucket)
    for _ in range(WRITE_ATTEMPTS):
        line, stored = _find(bucket, lines, decision.proposal_id)
        frame = stored.frame.copy()
        at = frame.index[frame["proposal_id"] == decision.proposal_id][0]
        current = _to_proposal(frame.loc[at].to_dict())
        decided = apply_decision(current, decision)
        for column in ("status", "reviewer", "decided_at", "final_label", "final_class"):
            value = getattr(decided, column)
            frame.at[at, column] = value.value if hasattr(value, "value") else value
        if write_proposals(bucket, line, _normalized(frame), etag=stored.etag):
            return decided
    raise RuntimeError(f"proposal {decision.proposal_id}: the queue changed under {WRITE_ATTEMPTS} rewrites in a row")


def _find(bucket: str, lines: list[str], wanted: str):
    for line in lines:
        stored = read_proposals(bucket, line)
        if stored.frame is not None and (stored.frame["proposal_id"] == wanted).any():
            return line, stored
    where = f"line {lines[0]!r}" if len(lines) == 1 else f"lines {lines}"
    raise UnknownProposalError(f"proposal_id={wanted!r} is not in the review queue of {where}")


def apply_decision(proposal: LabelProposal, decision: ReviewDecision) -> LabelProposal:
    """The proposal with the decision applied (pure): final label and class, reviewer, time."""
    if proposal.status is not ProposalStatus.PENDING:
        raise ProposalDecidedError(
            f"proposal_id={proposal.proposal_id!r} was already {proposal.status.value} by {proposal.reviewer!r} "
            f"at {proposal.decided_at.isoformat()} (label {proposal.final_label!r}, class {proposal.final_class.value})"
        )
    spec = SpecLimits(target_metric="target", lower=proposal.spec_lower, upper=proposal.spec_upper)
    if decision.action is ReviewAction.ACCEPT:
        if proposal.proposed_label is None:
            raise ValueError(
                f"proposal_id={proposal.proposal_id!r} has no proposed label (too few measured examples on "
                f"line {proposal.line_id!r}): correct it with a value or a class"
            )
        label, label_class, status = proposal.proposed_label, proposal.proposed_class, ProposalStatus.ACCEPTED
    elif decision.value is not None:
        label, status = decision.value, ProposalStatus.CORRECTED
        label_class = ViolationClass(classify(np.array([label]), spec)[0])
    else:
        label, label_class = label_for_class(proposal, decision.label_class), decision.label_class
        status = ProposalStatus.CORRECTED
    return proposal.model_copy(
        update={
            "status": status,
            "reviewer": decision.reviewer,
            "decided_at": decision.decided_at,
            "final_label": float(label),
            "final_class": label_class,
        }
    )


def label_for_class(proposal: LabelProposal, label_class: ViolationClass) -> float:
    """A value for a class-only correction: the labeling model's prediction, conditioned on the class
    (the mean of N(proposed_label, prediction_std^2) truncated to the class's side of the limits)."""
    low, high = {
        ViolationClass.LSL: (-np.inf, proposal.spec_lower),
        ViolationClass.IN_RANGE: (proposal.spec_lower, proposal.spec_upper),
        ViolationClass.USL: (proposal.spec_upper, np.inf),
    }[label_class]
    if proposal.proposed_label is None or not proposal.prediction_std:
        if label_class is ViolationClass.IN_RANGE:
            return (proposal.spec_lower + proposal.spec_upper) / 2
        raise ValueError(
            f"proposal_id={proposal.proposal_id!r} has no prediction to place a {label_class.value} label: "
            "correct it with a value instead"
        )
    mean, std = proposal.proposed_label, proposal.prediction_std
    value = truncated_normal_mean(mean, std, low, high)
    if not np.isfinite(value):  # the class lies far in the prediction's tail: take its nearest edge
        value = low if np.isfinite(low) and mean < low else high
    # classes are strict outside the limits (label < lower is LSL): keep the value inside its class
    if label_class is ViolationClass.LSL:
        value = min(value, np.nextafter(proposal.spec_lower, -np.inf))
    elif label_class is ViolationClass.USL:
        value = max(value, np.nextafter(proposal.spec_upper, np.inf))
    else:
        value = min(max(value, proposal.spec_lower), proposal.spec_upper)
    return value


def _to_proposal(row: dict) -> LabelProposal:
    fields = {}
    for column in PROPOSAL_COLUMNS:
        value = row[column]
        fields[column] = None if _missing(value) else value
    fields["window_start"] = pd.Timestamp(row["window_start"]).to_pydatetime()
    fields["window_end"] = pd.Timestamp(row["window_end"]).to_pydatetime()
    fields["proposed_at"] = pd.Timestamp(row["proposed_at"]).to_pydatetime()
    if fields["decided_at"] is not None:
        fields["decided_at"] = pd.Timestamp(fields["decided_at"]).to_pydatetime()
    return LabelProposal.model_validate(fields)


def _missing(value) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


# --- labels out of the queue ---------------------------------------------------------------------


def labeled_from_review(bucket: str, line_id: str, use_case: UseCaseConfig) -> pd.DataFrame:
    """Example rows (the packer's columns) for a line's auto labels and decided proposals.

    label_source is `auto` or `reviewed`; a reviewer's decision wins over an auto label of the same
    window, and a window that has a measured label by now is left out (the measurement wins).
    """
    features = use_case.feature_names
    stored = read_proposals(bucket, line_id).frame
    stored = _empty_queue(features) if stored is None else stored
    decided = stored[stored["status"] != ProposalStatus.PENDING.value]
    reviewed = _as_examples(decided, "final_label", "final_class", LabelSource.REVIEWED, features)
    auto = get_auto_labels(bucket, line_id)
    if auto is None:
        auto = _as_examples(decided.iloc[:0], "final_label", "final_class", LabelSource.AUTO, features)
    auto = auto[~_windows(auto).isin(_windows(reviewed))]
    labeled = pd.concat([reviewed, auto[list(reviewed.columns)]], ignore_index=True)
    labeled = labeled[~_windows(labeled).isin(_measured_windows(bucket, line_id))]
    return labeled.sort_values(["window_start", "window_end"], kind="stable").reset_index(drop=True)


def _windows(frame: pd.DataFrame) -> pd.Index:
    return pd.MultiIndex.from_arrays([_utc(frame["window_start"]), _utc(frame["window_end"])])


def _measured_windows(bucket: str, line_id: str) -> pd.Index:
    body = s3.get_bytes_or_none(bucket, examples_key(line_id))
    if body is None:
        return pd.MultiIndex.from_arrays([[], []])
    return _windows(pq.read_table(io.BytesIO(body), columns=["window_start", "window_end"]).to_pandas())
