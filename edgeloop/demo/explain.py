"""Why a recall in the demo's table is 0.00: the one rule, so no 0.00 of a class that occurs is left unexplained.

For each line and class, by the reference (held-out) examples of that class and the recalls shown:
- the class does not occur: the cell reads "absent", never 0.00;
- the model recalls some of it (shown above 0.00): nothing to explain;
- the oracle (the model's learner given the simulator's hidden state, edgeloop/oracle.py) recalls some: the
  model misses them, and the note says what the oracle gets;
- neither recalls any, but a trivial baseline does (persistence: the violation was already under way at the
  pack end): both learners miss what the baseline sees; the note gives its figure and how many examples of
  the class the training runs held;
- nothing recalls any: they are beyond what the line's state at the pack end can tell at this horizon;
- no oracle figures for the line: the note says why.
A baseline's 0.00 has a reason of its own (what the baseline predicts), also given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from edgeloop.sagemaker_pipelines.steps.baselines import PERSISTENCE, SETPOINT
from edgeloop.schemas.training import ViolationClass

RECALL_FORMAT = ".2f"  # how every recall is shown; "0.00" is what this module explains
ABSENT = "absent"
EXPLAINED = "*"  # marks a shown 0.00 that a note explains
CLASS_NAMES = {
    ViolationClass.LSL.value: "LSL",
    ViolationClass.IN_RANGE.value: "in range",
    ViolationClass.USL.value: "USL",
}
CLASS_ORDER = tuple(CLASS_NAMES)
# what each trivial baseline predicts, hence why it recalls nothing of a class (baselines.py)
BASELINE_REASONS = {
    PERSISTENCE: "it predicts the value at the pack end, which for none of them was in the label's class yet "
    "(for a violation: beyond the limit)",
    SETPOINT: "it predicts the middle of the spec band, never a violation",
}


class RecallCase(StrEnum):
    ABSENT = "absent"  # no reference example of the class
    RECALLED = "recalled"  # the model's recall is shown above 0.00
    MODEL_MISSES = "model_misses"  # the oracle recalls some
    LEARNERS_MISS = "learners_miss"  # model and oracle none, a baseline some
    BEYOND_HORIZON = "beyond_horizon"  # no predictor recalls any
    NO_ORACLE = "no_oracle"  # no oracle figures to compare with


@dataclass(frozen=True)
class ClassRecalls:
    """One line's recalls of one class on the reference rows (None: the predictor was not scored)."""

    line_id: str
    cls: str
    count: int  # reference examples of the class
    trained_on: int  # training examples of the class
    model: float | None
    oracle: float | None
    baselines: Mapping[str, float] = field(default_factory=dict)

    @property
    def best_baseline(self) -> tuple[str, float] | None:
        """The baseline recalling most of the class, where one recalls any (shown above 0.00)."""
        recalled = [(value, name) for name, value in self.baselines.items() if not shows_zero(value)]
        return None if not recalled else max(recalled)[::-1]


def shows_zero(recall: float) -> bool:
    return format(recall, RECALL_FORMAT) == format(0.0, RECALL_FORMAT)


def recall_case(recalls: ClassRecalls) -> RecallCase:
    """The rule for one line and class."""
    if recalls.count == 0:
        return RecallCase.ABSENT
    if recalls.model is None:
        raise ValueError(
            f"{recalls.line_id} {recalls.cls}: model recall None for {recalls.count} reference examples: every "
            "class present is scored"
        )
    if not shows_zero(recalls.model):
        return RecallCase.RECALLED
    if recalls.oracle is None:
        return RecallCase.NO_ORACLE
    if not shows_zero(recalls.oracle):
        return RecallCase.MODEL_MISSES
    return RecallCase.BEYOND_HORIZON if recalls.best_baseline is None else RecallCase.LEARNERS_MISS


def recall_cells(recall: Mapping[str, float], counts: Mapping[str, int]) -> str:
    """LSL / in range / USL: "absent" where the class does not occur, a 0.00 that a note explains marked `*`."""
    cells = []
    for cls in CLASS_ORDER:
        if counts.get(cls, 0) == 0:
            cells.append(ABSENT)
        elif cls not in recall:
            raise ValueError(f"recall[{cls!r}] missing although {counts[cls]} reference examples are {cls}")
        else:
            value = format(recall[cls], RECALL_FORMAT)
            cells.append(value + (EXPLAINED if shows_zero(recall[cls]) else ""))
    return " / ".join(cells)


def model_note(recalls: ClassRecalls, horizon_s: float, no_oracle: str) -> str | None:
    """The note for the model's recall of a class on one line (None: nothing to explain); `no_oracle` says
    why there are no oracle figures, where there are none."""
    case = recall_case(recalls)
    if case in (RecallCase.ABSENT, RecallCase.RECALLED):
        return None
    head = f"{recalls.line_id} {CLASS_NAMES[recalls.cls]}: the model recalls none of {recalls.count} reference examples"
    if case is RecallCase.NO_ORACLE:
        return f"{head}; no oracle figures to compare with ({no_oracle})"
    if case is RecallCase.MODEL_MISSES:
        return f"{head}; the model misses them, the oracle gets {format(recalls.oracle, RECALL_FORMAT)}"
    if case is RecallCase.LEARNERS_MISS:
        name, value = recalls.best_baseline
        return (
            f"{head}, nor does the oracle, though {name} gets {format(value, RECALL_FORMAT)}: both learners miss "
            f"what {name} sees; the training run(s) held {recalls.trained_on} examples of the class to learn from"
        )
    return (
        f"{head}, nor does the oracle (the hidden state at the pack end) or any baseline: they are beyond what the "
        f"line's state can tell {horizon_s:.0f} s ahead"
    )


def oracle_note(recalls: ClassRecalls, margin: float) -> str | None:
    """The note for the oracle's 0.00 where the model recalls some (the other way round `model_note` says it)."""
    if recalls.count == 0 or recalls.oracle is None or not shows_zero(recalls.oracle) or shows_zero(recalls.model):
        return None
    return (
        f"{recalls.line_id} {CLASS_NAMES[recalls.cls]}: the oracle recalls none of {recalls.count} reference examples "
        f"(the model gets {format(recalls.model, RECALL_FORMAT)}): at its decision margin {margin:.2f}, tuned on the "
        "training runs, it flags none of them"
    )


def baseline_note(line_id: str, name: str, classes: list[tuple[str, int]]) -> str:
    """Why baseline `name` recalls none of `classes` ((class, reference examples) pairs) on one line."""
    missed = ", ".join(f"{CLASS_NAMES[cls]} ({count} examples)" for cls, count in classes)
    reason = BASELINE_REASONS.get(name)
    if reason is None:
        raise ValueError(
            f"baseline {name!r} has no reason for a 0.00 recall in BASELINE_REASONS: {sorted(BASELINE_REASONS)}"
        )
    return f"{line_id} {name} recalls none of {missed}: {reason}"
