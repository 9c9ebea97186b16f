"""`edgeloop labels review`: list, accept, correct, refuse, and the interactive mode."""

from __future__ import annotations

import numpy as np
import pytest
from review_packs import packs_frame, tiny_use_case
from typer.testing import CliRunner

from edgeloop.cli.labels import labels_app
from edgeloop.cloud.packing.label_review import proposals, queue_line_proposals
from edgeloop.schemas.training import ProposalStatus

BUCKET = "edgeloop-labels-cli-test"
USE_CASE = tiny_use_case()
runner = CliRunner()


@pytest.fixture
def queue(s3):
    """Two lines whose near-limit packs (predictions about 1 and 3) wait for review."""
    rng = np.random.default_rng(0)
    for line in ("line-a", "line-b"):
        x = rng.uniform(-1.5, 1.5, size=100)
        measured = packs_frame(line, x, 2.0 + x + rng.normal(scale=0.1, size=100))
        unlabeled = packs_frame(line, np.array([-1.0, -0.98, 0.0, 1.0]), None, first_window=500)
        queue_line_proposals(BUCKET, line, measured, unlabeled, USE_CASE)
    return {p.line_id: [] for p in proposals(BUCKET)} | _pending_by_line()


def _pending_by_line() -> dict[str, list]:
    by_line: dict[str, list] = {}
    for proposal in proposals(BUCKET, status=ProposalStatus.PENDING):
        by_line.setdefault(proposal.line_id, []).append(proposal)
    return by_line


def review(*args: str, input: str | None = None):
    return runner.invoke(labels_app, ["review", "--data-bucket", BUCKET, "--reviewer", "ana", *args], input=input)


def test_lists_pending_proposals_of_every_line_or_one(queue):
    result = review()
    assert result.exit_code == 0, result.output
    ids = [p.proposal_id for line in queue.values() for p in line]
    assert len(ids) == 6 and all(i in result.output for i in ids)  # 3 near-limit packs per line
    assert "[1, 3]" in result.output and "line-a" in result.output and "line-b" in result.output

    only_b = review("--line", "line-b")
    assert "line-b" in only_b.output and "line-a" not in only_b.output


def test_accept_and_correct_by_value_or_class(queue):
    first, second, third = queue["line-a"]

    accepted = review("--accept", first.proposal_id)
    assert accepted.exit_code == 0, accepted.output
    assert f"{first.proposal_id} accepted by ana" in accepted.output

    by_value = review("--correct", second.proposal_id, "--value", "3.81")
    assert by_value.exit_code == 0 and "label 3.81 (usl_violation)" in by_value.output

    by_class = review("--correct", third.proposal_id, "--class", "in_range", "--line", "line-a")
    assert by_class.exit_code == 0 and "(in_range)" in by_class.output

    decided = {p.proposal_id: p for p in proposals(BUCKET, "line-a")}
    assert decided[first.proposal_id].status is ProposalStatus.ACCEPTED
    assert decided[second.proposal_id].final_label == 3.81
    assert 1.0 <= decided[third.proposal_id].final_label <= 3.0 and decided[third.proposal_id].reviewer == "ana"
    assert first.proposal_id not in review().output  # no longer pending


BAD_REQUESTS = [
    (("--accept", "0123456789ab"), "proposal_id='0123456789ab' is not in the review queue"),
    (("--correct", "{id}"), "needs --value or --class"),
    (("--correct", "{id}", "--class", "too_thick"), "--class 'too_thick' is not one of"),
    (("--accept", "{id}", "--value", "2"), "--value and --class go with --correct"),
    (("--correct", "{id}", "--value", "2", "--class", "in_range"), "exactly one of value or label_class"),
    (("--accept", "{id}", "--line", "line-b"), "is not in the review queue of line 'line-b'"),
]


def test_bad_requests_are_refused_with_a_clear_message(queue):
    first = queue["line-a"][0]
    for args, message in BAD_REQUESTS:
        result = review(*(a.format(id=first.proposal_id) for a in args))
        assert result.exit_code == 1, args
        assert message in " ".join(result.output.split()), (args, result.output)
    assert proposals(BUCKET, "line-a", status=ProposalStatus.PENDING)[0].proposal_id == first.proposal_id


def test_a_missing_bucket_is_named(queue):
    result = runner.invoke(labels_app, ["review", "--data-bucket", "no-such-bucket-here"])
    assert result.exit_code == 1 and "--data-bucket 'no-such-bucket-here'" in " ".join(result.output.split())


def test_a_decided_proposal_is_refused(queue):
    first = queue["line-a"][0]
    assert review("--accept", first.proposal_id).exit_code == 0

    again = review("--correct", first.proposal_id, "--value", "2.0")

    assert again.exit_code == 1
    assert f"proposal_id='{first.proposal_id}' was already accepted by 'ana'" in " ".join(again.output.split())


def test_interactive_mode_accepts_corrects_skips_and_quits(queue):
    pending = queue["line-a"]
    # accept the first, correct the second (a bad answer first, then a value), skip the third,
    # then quit at line-b's first
    result = review("--line", "line-a", "--interactive", input="a\nc\nthick\n0.5\ns\n")
    assert result.exit_code == 0, result.output
    assert "1 accepted, 1 corrected, 1 skipped" in result.output
    assert "'thick' is neither a number nor one of" in result.output
    stored = {p.proposal_id: p for p in proposals(BUCKET, "line-a")}
    assert stored[pending[0].proposal_id].status is ProposalStatus.ACCEPTED
    assert (stored[pending[1].proposal_id].final_label, stored[pending[1].proposal_id].final_class.value) == (
        0.5,
        "lsl_violation",
    )
    assert stored[pending[2].proposal_id].status is ProposalStatus.PENDING

    quit_now = review("--interactive", input="q\n")
    assert "0 accepted, 0 corrected, 0 skipped" in quit_now.output
    assert len(proposals(BUCKET, status=ProposalStatus.PENDING)) == 4


def test_the_main_cli_has_the_labels_group():
    from edgeloop.cli import app

    result = runner.invoke(app, ["labels", "review", "--help"])
    assert result.exit_code == 0 and "--interactive" in result.output
