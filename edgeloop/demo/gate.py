"""The demo's registration decision: the pipeline's own split, evaluation and gate, per line.

Each line's examples are split by the dataset step's `reference_split` (the newest whole run(s) are
the reference, never trained on); the candidate trained on the rest is judged by the evaluate step's
`evaluate_candidate`: scored through the device scorer beside persistence and the setpoint, and
refused unless it beats persistence (the gate, sagemaker_pipelines/steps/baselines.py). Only a line
whose candidate passed is registered, approved and rolled out.

Beside them the oracle (oracle.py: the same learner given the simulator's hidden state) shows what the
line's physics allow at the horizon, and explain.py says why a recall shown as 0.00 is 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from edgeloop.demo.explain import (
    CLASS_ORDER,
    ClassRecalls,
    baseline_note,
    model_note,
    oracle_note,
    recall_cells,
    shows_zero,
)
from edgeloop.schemas import UseCaseConfig

if TYPE_CHECKING:
    from edgeloop.sagemaker_pipelines.steps.baselines import ScoredMetrics
    from edgeloop.sagemaker_pipelines.steps.evaluate import EvaluationReport

MODEL = "model"
ORACLE = "oracle"
COMPARISON_COLUMNS = (
    "line",
    "predictor",
    "margin",
    "RMSE",
    "violation P / R / F1",
    "lead time",
    "recall LSL / in / USL",
)


@dataclass(frozen=True)
class OracleFigures:
    """The oracle (the model's learner given the simulator's hidden state) on the same reference rows,
    classified at its own decision margin (tuned on the training runs as the model's is)."""

    metrics: ScoredMetrics
    margin: float
    # the best violation recall over margins at a violation precision >= the model's (None: never reached,
    # or the model flags no violation): issue 16's "recall at the same precision"
    recall_at_model_precision: float | None = None


@dataclass
class LineEvaluation:
    """One line's candidate on its reference run(s), beside the trivial baselines and the oracle, and the decision."""

    line_id: str
    report: EvaluationReport
    rows_train: int
    reference_runs: list[str]
    horizon_s: float
    class_counts: dict[str, int] = field(default_factory=dict)  # scored reference examples per label class
    train_class_counts: dict[str, int] = field(default_factory=dict)  # training examples per label class
    registered: bool = False
    oracle: OracleFigures | None = None
    oracle_missing: str = "not computed"  # why `oracle` is None

    @property
    def passed(self) -> bool:
        return self.report.passed

    @property
    def figures(self) -> dict[str, ScoredMetrics]:
        """The model, then persistence, the setpoint and the oracle, all scored on the same reference rows."""
        oracle = {} if self.oracle is None else {ORACLE: self.oracle.metrics}
        return {MODEL: self.report.candidate, **self.report.baselines, **oracle}

    @property
    def margins(self) -> dict[str, float | None]:
        """Each predictor's decision margin (fraction of the half spec band); baselines decide at 0."""
        margins: dict[str, float | None] = dict.fromkeys(self.report.baselines, 0.0)
        point = self.report.operating_point  # the model's, at its payload's decision margin
        margins[MODEL] = None if point is None else point.margin
        if self.oracle is not None:
            margins[ORACLE] = self.oracle.margin
        return margins

    @property
    def verdict(self) -> str:
        return ("registered" if self.registered else "passed") if self.passed else "REFUSED"


def split_lines(examples: Mapping[str, pd.DataFrame], use_case: UseCaseConfig) -> dict[str, tuple]:
    """(train, reference) per line, by the dataset step's whole-run split (use_case.validation); a
    ValueError names the line that has too few runs."""
    from edgeloop.sagemaker_pipelines.steps.dataset import reference_split

    splits = {}
    for line_id, frame in examples.items():
        try:
            splits[line_id] = reference_split(frame, use_case)
        except ValueError as exc:
            raise ValueError(f"{line_id}: {exc}") from exc
    return splits


def evaluate_line(trained, train: pd.DataFrame, reference: pd.DataFrame, use_case: UseCaseConfig, line_id: str):
    """The evaluate step's judgement of one line's candidate (no champion in a fresh demo)."""
    from edgeloop.cloud.packing.labels import predictable
    from edgeloop.sagemaker_pipelines.steps.evaluate import evaluate_candidate

    report = evaluate_candidate(trained, reference, use_case, line_id=line_id)
    return LineEvaluation(
        line_id=line_id,
        report=report,
        rows_train=len(train),
        reference_runs=list(dict.fromkeys(reference.sort_values("window_end")["run_id"].astype(str))),
        horizon_s=use_case.horizon_s,
        class_counts=class_counts(predictable(reference, use_case)),  # the rows evaluate scores
        train_class_counts=class_counts(predictable(train, use_case)),
    )


def class_counts(reference: pd.DataFrame) -> dict[str, int]:
    counts = reference["label_class"].astype(str).value_counts()
    return {cls: int(counts.get(cls, 0)) for cls in CLASS_ORDER}


# --- how the figures read ------------------------------------------------------------------------


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def predictor_label(evaluation: LineEvaluation, name: str) -> str:
    if name == MODEL:
        return f"model ({evaluation.verdict})"
    return "oracle (hidden state)" if name == ORACLE else name


def comparison_rows(evaluations: Mapping[str, LineEvaluation]) -> list[list[str]]:
    """Per line: the model, persistence, the setpoint and the oracle side by side on the reference run(s)."""
    rows = []
    for line_id, evaluation in evaluations.items():
        margins = evaluation.margins
        for name, m in evaluation.figures.items():
            rmse = m.rmse if m.rmse is not None else m.mse**0.5
            lead = None if m.lead_time_median_s is None else f"{m.lead_time_median_s:.0f} s"
            rows.append(
                [
                    line_id if name == MODEL else "",
                    predictor_label(evaluation, name),
                    _number(margins.get(name), ".2f"),
                    f"{rmse:.5f}",
                    " / ".join(_number(v, ".2f") for v in (m.violation_precision, m.violation_recall, m.violation_f1)),
                    lead or "-",
                    recall_cells(m.recall, evaluation.class_counts),
                ]
            )
    return rows


def oracle_lines(evaluations: Mapping[str, LineEvaluation]) -> list[str]:
    """Per line with an oracle: the model's violation recall beside the oracle's at the model's precision."""
    lines = []
    for e in evaluations.values():
        model = e.report.candidate
        if e.oracle is None or model.violation_precision is None or model.violation_recall is None:
            continue
        at = e.oracle.recall_at_model_precision
        oracle = "never reaches it" if at is None else f"recalls {at:.2f}"
        lines.append(
            f"{e.line_id}: at the model's violation precision {model.violation_precision:.2f} the oracle {oracle} "
            f"(the model {model.violation_recall:.2f})"
        )
    return lines


def decision_lines(evaluations: Mapping[str, LineEvaluation]) -> list[str]:
    """Per line: what was held out and the gate's reason (with both figures)."""
    return [
        f"{e.line_id}: {e.verdict}: {e.report.reason} (trained on {e.rows_train} examples, reference "
        f"{e.report.reference.rows} examples of run(s) {', '.join(e.reference_runs)})"
        for e in evaluations.values()
    ]


def class_recalls(e: LineEvaluation) -> list[ClassRecalls]:
    """The recalls of each class that occurs in the line's reference rows, per predictor."""
    return [
        ClassRecalls(
            line_id=e.line_id,
            cls=cls,
            count=count,
            trained_on=e.train_class_counts.get(cls, 0),
            model=e.report.candidate.recall.get(cls),
            oracle=None if e.oracle is None else e.oracle.metrics.recall.get(cls),
            baselines={name: m.recall[cls] for name, m in e.report.baselines.items()},
        )
        for cls, count in e.class_counts.items()
        if count > 0
    ]


def recall_zero_notes(evaluations: Mapping[str, LineEvaluation]) -> list[str]:
    """Why each recall shown as 0.00 of a class that occurs in the reference data is 0 (explain.py's rule)."""
    notes: list[str | None] = []
    for e in evaluations.values():
        present = class_recalls(e)
        for recalls in present:
            notes.append(model_note(recalls, e.horizon_s, e.oracle_missing))
            if e.oracle is not None:
                notes.append(oracle_note(recalls, e.oracle.margin))
        for name in e.report.baselines:
            missed = [(r.cls, r.count) for r in present if shows_zero(r.baselines[name])]
            if missed:
                notes.append(baseline_note(e.line_id, name, missed))
    return [note for note in notes if note is not None]


def comparison_table(evaluations: Mapping[str, LineEvaluation]):
    """The console form of `comparison_rows` (rich Table)."""
    from rich.table import Table

    table = Table(
        title="Model vs trivial baselines and the oracle on the held-out newest run(s): the registration gate"
    )
    for column in COMPARISON_COLUMNS:
        table.add_column(column)
    for row in comparison_rows(evaluations):
        table.add_row(*row)
    return table
