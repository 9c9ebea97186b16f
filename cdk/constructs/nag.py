"""cdk-nag 3 acknowledgments, kept exact: one finding, one reason, on the narrowest construct.

cdk-nag 3 reports each wildcard of a policy as its own finding (`AwsSolutions-IAM5[Resource::...]`)
and only accepts acknowledgments of that exact id, so `allow` adds a policy statement and
acknowledges the wildcards of that statement alone, rendered the way cdk-nag renders them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_iam as iam
from constructs import IConstruct

PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge `rule` (e.g. "L1" or "IAM5[Resource::*]") on `scope` and its children."""
    if len(reason.strip()) < 20:
        raise ValueError(f"acknowledgment of {rule} on {scope.node.path}: reason={reason!r} explains nothing")
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{PACK}::{PACK}-{rule}", reason=reason))


def allow(
    role: iam.Role,
    *,
    actions: Iterable[str],
    resources: Iterable[str],
    reason: str,
    conditions: Mapping[str, Any] | None = None,
) -> iam.PolicyStatement:
    """Grant `role` a statement; acknowledge its wildcards (if any) with `reason`."""
    actions, resources = list(actions), list(resources)
    statement = iam.PolicyStatement(actions=actions, resources=resources, conditions=dict(conditions or {}) or None)
    role.add_to_policy(statement)
    for finding in wildcard_findings(Stack.of(role), actions, resources):
        acknowledge(role, f"IAM5[{finding}]", reason)
    return statement


def wildcard_findings(stack: Stack, actions: Iterable[str], resources: Iterable[str]) -> list[str]:
    findings = [f"Action::{a}" for a in actions if "*" in a]
    for resource in resources:
        flat = flatten_reference(stack.resolve(resource))
        if "*" in flat:
            findings.append(f"Resource::{flat}")
    return findings


def flatten_reference(node: Any) -> str:
    """A resolved CloudFormation value as cdk-nag flattens it (utils/flatten-cfn-reference)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(flatten_reference(item) for item in items)
        if "Fn::Sub" in node:
            return flatten_reference(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_reference(resource)}.{flatten_reference(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten_reference(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten_reference(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))
