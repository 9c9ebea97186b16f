"""SQS queues that stand in for what AWS delivers to (an EventBridge rule's target, an SNS subscription),
and what arrived in them. For tests inside moto (in process or moto_server): moto delivers to a queue
without the queue policy AWS needs, so these tests never prove the policies."""

from __future__ import annotations

import json

import boto3


def queue(name: str) -> tuple[str, str]:
    """A new queue's URL and ARN."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def queue_behind_rule(rule: str, pattern: dict, *, bus: str = "default") -> str:
    """The URL of a queue that an EventBridge rule on `bus` with `pattern` targets."""
    url, arn = queue(rule)
    events = boto3.client("events")
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern), EventBusName=bus)
    events.put_targets(Rule=rule, EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    return url


def received(url: str) -> list[dict]:
    """Every message body waiting in the queue, parsed (EventBridge events and SNS envelopes are JSON),
    and deleted: a second call returns only what arrived since."""
    sqs, bodies = boto3.client("sqs"), []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies
