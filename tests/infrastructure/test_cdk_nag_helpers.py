"""The acknowledgment helpers: findings rendered as cdk-nag renders them, and nag really gating."""

from __future__ import annotations

import pytest

from edgeloop.cdk.constructs.nag import acknowledge, flatten_reference


def test_flatten_reference_matches_cdk_nag_rendering():
    resolved = {"Fn::Join": ["", [{"Fn::GetAtt": ["DataBucketAB12", "Arn"]}, "/raw/*"]]}
    assert flatten_reference(resolved) == "<DataBucketAB12.Arn>/raw/*"
    pseudo = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":iot:", {"Ref": "AWS::Region"}, ":thing/*"]]}
    assert flatten_reference(pseudo) == "arn:<AWS::Partition>:iot:<AWS::Region>:thing/*"
    assert flatten_reference({"Fn::Sub": "arn:${AWS::Partition}:s3:::x/*"}) == "arn:<AWS::Partition>:s3:::x/*"
    assert flatten_reference("*") == "*"


def _queue_stack():
    import aws_cdk as cdk
    from aws_cdk import aws_sqs as sqs
    from cdk_nag import AwsSolutionsChecks

    app = cdk.App()
    stack = cdk.Stack(app, "NagProbe")
    # Encrypted, but neither SSL-only (SQS4) nor with a DLQ (SQS3).
    queue = sqs.Queue(stack, "Queue", encryption=sqs.QueueEncryption.SQS_MANAGED)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return stack, queue


def test_unacknowledged_finding_fails_the_synth_and_names_the_rule():
    from aws_cdk.assertions import Template

    stack, queue = _queue_stack()
    acknowledge(queue, "SQS3", "a probe queue: only SQS4 should remain unacknowledged")
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        Template.from_stack(stack)
    report = str(raised.value)
    assert "AwsSolutions-SQS4" in report
    assert "AwsSolutions-SQS3" not in report


def test_acknowledgment_needs_a_real_reason():
    stack, queue = _queue_stack()
    with pytest.raises(ValueError, match="reason"):
        acknowledge(queue, "SQS4", "ok")
