"""The demo's table never shows a silent 0.00: each branch of the one rule (edgeloop/demo/explain.py),
on synthetic figures, and the table and notes a line's figures give."""

from __future__ import annotations

import pytest

from edgeloop.demo.explain import ClassRecalls, RecallCase, recall_case, recall_cells
from edgeloop.demo.gate import LineEvaluation, OracleFigures, comparison_rows, oracle_lines, recall_zero_notes
from edgeloop.sagemaker_pipelines.steps.baselines import ScoredMetrics
from edgeloop.sagemaker_pipelines.steps.evaluate import EvaluationReport, ReferenceInfo
from edgeloop.sagemaker_pipelines.steps.operating_point import OperatingPoint

LSL, IN, USL = "lsl_violation", "in_range", "usl_violation"


def scored(recall: dict[str, float]) -> ScoredMetrics:
    return ScoredMetrics(mse=1e-4, rmse=1e-2, mae=5e-3, recall=recall, n_train=100, n_test=50)


def evaluation(
    model: dict, persistence: dict, oracle: dict | None, counts: dict, margin: float = 0.2
) -> LineEvaluation:
    report = EvaluationReport(
        line_id="line-1",
        passed=True,
        reason="ok",
        candidate=scored(model),
        baselines={"persistence": scored(persistence), "setpoint": scored({c: 1.0 if c == IN else 0.0 for c in model})},
        reference=ReferenceInfo(rows=sum(counts.values()), content_sha256="a" * 64),
    )
    return LineEvaluation(
        line_id="line-1",
        report=report,
        rows_train=100,
        reference_runs=["run-0003"],
        horizon_s=300.0,
        class_counts=counts,
        train_class_counts={cls: 10 * n for cls, n in counts.items()},
        oracle=None if oracle is None else OracleFigures(metrics=scored(oracle), margin=margin),
        oracle_missing="no simulator for this line",
    )


@pytest.mark.parametrize(
    ("count", "model", "oracle", "persistence", "case"),
    [
        (0, None, None, 0.0, RecallCase.ABSENT),
        (12, 0.25, 0.0, 0.0, RecallCase.RECALLED),
        (12, 0.0, 0.42, 0.5, RecallCase.MODEL_MISSES),
        (12, 0.0, 0.0, 0.5, RecallCase.LEARNERS_MISS),
        (12, 0.0, 0.0, 0.0, RecallCase.BEYOND_HORIZON),
        (12, 0.004, 0.0049, 0.001, RecallCase.BEYOND_HORIZON),  # all shown as 0.00
        (12, 0.0, None, 0.5, RecallCase.NO_ORACLE),
    ],
)
def test_each_branch_of_the_rule(count, model, oracle, persistence, case):
    recalls = ClassRecalls("line-1", USL, count, 40, model, oracle, {"persistence": persistence, "setpoint": 0.0})
    assert recall_case(recalls) is case


def test_a_present_class_without_a_model_recall_is_an_error_naming_it():
    with pytest.raises(ValueError, match="line-1 usl_violation: model recall None for 3 reference examples"):
        recall_case(ClassRecalls("line-1", USL, 3, 40, None, 0.5))


def test_an_absent_class_reads_absent_and_an_explained_zero_is_marked():
    cells = recall_cells({IN: 0.97, USL: 0.0}, {LSL: 0, IN: 300, USL: 9})
    assert cells == "absent / 0.97 / 0.00*"
    with pytest.raises(ValueError, match="recall\\['usl_violation'\\] missing although 9 reference examples"):
        recall_cells({IN: 0.97}, {LSL: 0, IN: 300, USL: 9})


def test_the_oracle_row_sits_beside_the_model_and_the_baselines_with_the_margins():
    line = evaluation({IN: 0.98, USL: 0.0}, {IN: 0.99, USL: 0.0}, {IN: 0.97, USL: 0.4}, {LSL: 0, IN: 300, USL: 10})
    rows = comparison_rows({"line-1": line})
    assert [row[1] for row in rows] == ["model (passed)", "persistence", "setpoint", "oracle (hidden state)"]
    assert [row[2] for row in rows] == ["-", "0.00", "0.00", "0.20"]  # the model's: no operating point in this report
    point = OperatingPoint(margin=0.15, precision=0.5, recall=0.4, f1=0.44)
    line.report = line.report.model_copy(update={"operating_point": point})
    assert comparison_rows({"line-1": line})[0][2] == "0.15"
    assert [row[-1] for row in rows] == [
        "absent / 0.98 / 0.00*",
        "absent / 0.99 / 0.00*",
        "absent / 1.00 / 0.00*",
        "absent / 0.97 / 0.40",
    ]


def test_the_model_misses_what_the_oracle_gets():
    line = evaluation({IN: 0.98, USL: 0.0}, {IN: 0.99, USL: 0.1}, {IN: 0.97, USL: 0.4}, {LSL: 0, IN: 300, USL: 10})
    notes = recall_zero_notes({"line-1": line})
    assert notes == [
        "line-1 USL: the model recalls none of 10 reference examples; the model misses them, the oracle gets 0.40",
        "line-1 setpoint recalls none of USL (10 examples): it predicts the middle of the spec band, never a violation",
    ]


def test_both_learners_miss_what_persistence_saw_at_the_pack_end():
    line = evaluation({IN: 1.0, USL: 0.0}, {IN: 0.89, USL: 0.91}, {IN: 0.92, USL: 0.0}, {LSL: 0, IN: 200, USL: 11})
    assert recall_zero_notes({"line-1": line})[0] == (
        "line-1 USL: the model recalls none of 11 reference examples, nor does the oracle, though persistence gets "
        "0.91: both learners miss what persistence sees; the training run(s) held 110 examples of the class to "
        "learn from"
    )


def test_beyond_the_horizon_when_nothing_recalls_any():
    line = evaluation({LSL: 0.0, IN: 0.98}, {LSL: 0.0, IN: 0.99}, {LSL: 0.0, IN: 0.97}, {LSL: 4, IN: 300, USL: 0})
    notes = recall_zero_notes({"line-1": line})
    assert notes[0] == (
        "line-1 LSL: the model recalls none of 4 reference examples, nor does the oracle (the hidden state at the "
        "pack end) or any baseline: they are beyond what the line's state can tell 300 s ahead"
    )
    assert notes[1].startswith("line-1 persistence recalls none of LSL (4 examples): it predicts the value at the pack")
    assert len(notes) == 3  # and the setpoint's; USL is absent, nothing to explain


def test_no_oracle_figures_say_why_and_an_oracle_zero_under_a_model_hit_is_explained():
    without = evaluation({IN: 0.98, USL: 0.0}, {IN: 0.99, USL: 0.5}, None, {LSL: 0, IN: 300, USL: 10})
    assert recall_zero_notes({"line-1": without})[0] == (
        "line-1 USL: the model recalls none of 10 reference examples; no oracle figures to compare with "
        "(no simulator for this line)"
    )
    assert comparison_rows({"line-1": without})[-1][1] == "setpoint"  # no oracle row without figures
    oracle_misses = evaluation(
        {IN: 0.98, USL: 0.3}, {IN: 0.99, USL: 0.5}, {IN: 0.99, USL: 0.0}, {LSL: 0, IN: 300, USL: 10}
    )
    assert recall_zero_notes({"line-1": oracle_misses})[0] == (
        "line-1 USL: the oracle recalls none of 10 reference examples (the model gets 0.30): at its decision margin "
        "0.20, tuned on the training runs, it flags none of them"
    )


@pytest.mark.parametrize(
    "oracle", [{LSL: 0.5, IN: 0.0, USL: 0.0}, {LSL: 0.0, IN: 0.2, USL: 0.0}, None], ids=["misses", "beyond", "none"]
)
def test_every_zero_shown_for_a_present_class_has_a_note(oracle):
    zeros = {LSL: 0.0, IN: 0.0, USL: 0.0}
    line = evaluation(zeros, zeros, oracle, {LSL: 3, IN: 5, USL: 7})
    line.report.baselines["setpoint"] = scored(zeros)
    notes = recall_zero_notes({"line-1": line})
    names = {LSL: "LSL", IN: "in range", USL: "USL"}
    model_notes = {
        cls: [n for n in notes if n.startswith(f"line-1 {names[cls]}: the model recalls none")] for cls in names
    }
    shown = 0
    for row in comparison_rows({"line-1": line}):
        predictor = row[1].split(" ")[0]
        for cls, cell in zip(names, row[-1].split(" / ")):
            if cell != "0.00*":
                continue
            shown += 1
            if predictor == "model":
                assert len(model_notes[cls]) == 1, cls
            elif predictor == "oracle":  # the model's note for the class says the oracle gets none either
                assert "nor does the oracle" in model_notes[cls][0], cls
            else:
                assert any(n.startswith(f"line-1 {predictor} recalls none of") and names[cls] in n for n in notes), row
    assert shown >= 9


def test_the_report_shows_the_table_and_every_note():
    import html

    from edgeloop.demo.outcome import DemoOutcome
    from edgeloop.demo.report import _gate_section

    line = evaluation({IN: 1.0, USL: 0.0}, {IN: 0.89, USL: 0.91}, {IN: 0.92, USL: 0.0}, {LSL: 0, IN: 200, USL: 11})
    section = _gate_section(DemoOutcome(evaluations={"line-1": line}))
    assert "<td>oracle (hidden state)</td><td>0.20</td>" in section
    assert "<td>absent / 1.00 / 0.00*</td>" in section
    notes = recall_zero_notes({"line-1": line})
    assert "Why a recall is 0.00" in section and all(f"<li>{html.escape(note)}</li>" in section for note in notes)


def test_the_console_prints_the_table_the_legend_and_every_note():
    from rich.console import Console

    from edgeloop.demo.outcome import DemoOutcome
    from edgeloop.demo.summary import print_figures

    line = evaluation({IN: 1.0, USL: 0.0}, {IN: 0.89, USL: 0.91}, {IN: 0.92, USL: 0.0}, {LSL: 0, IN: 200, USL: 11})
    console = Console(record=True, width=400, file=None, force_terminal=False)
    print_figures(DemoOutcome(evaluations={"line-1": line}), console)
    text = console.export_text()
    assert "oracle (hidden state)" in text and "absent / 0.92 / 0.00*" in text
    assert '"absent" = the class does not occur' in text
    assert all(f"  * {note}" in text for note in recall_zero_notes({"line-1": line}))


@pytest.mark.parametrize(("at", "says"), [(0.8, "the oracle recalls 0.80"), (None, "the oracle never reaches it")])
def test_the_oracle_is_compared_at_the_models_precision(at, says):
    line = evaluation({IN: 1.0, USL: 0.4}, {IN: 0.89, USL: 0.91}, {IN: 0.92, USL: 0.9}, {LSL: 0, IN: 200, USL: 11})
    flagged = line.report.candidate.model_copy(update={"violation_precision": 0.5, "violation_recall": 0.4})
    line.report = line.report.model_copy(update={"candidate": flagged})
    line.oracle = OracleFigures(metrics=line.oracle.metrics, margin=0.2, recall_at_model_precision=at)
    assert oracle_lines({"line-1": line}) == [
        f"line-1: at the model's violation precision 0.50 {says} (the model 0.40)"
    ]
    silent = flagged.model_copy(update={"violation_precision": None})
    line.report = line.report.model_copy(update={"candidate": silent})
    assert oracle_lines({"line-1": line}) == []  # the model flags no violation: no precision to compare at
