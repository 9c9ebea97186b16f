"""What a synthesized edgeloop template loses on its way into moto's CloudFormation, in one table.

moto's CloudFormation creates only the resource types it has a model for (moto.cloudformation.
parsing.get_model_map) and silently skips every other one; a Ref or GetAtt to a skipped resource
then fails the whole stack ("references undefined resource"). Custom resources need their
provider Lambda to run, which moto cannot do without Docker. So before `cdk deploy` the test
applies one documented, minimal transform to the cloud assembly's template:

- resources of a type in MOTO_LACKS are removed (and only those);
- a Ref / GetAtt / ${...} to a removed resource becomes a placeholder string (`placeholder`), and a
  DependsOn on it is dropped, so every resource that merely points at one is still created;
- a template parameter read from an AWS *public* SSM parameter (`AWS::SSM::Parameter::Value<...>`
  with a default under /aws/, e.g. the Lambda layer ARNs AWS publishes per region) becomes a
  String parameter with a placeholder default: moto has none of them and refuses to create names
  under /aws/ (public_parameters lists them for the README);
- the resources are listed after those they DependsOn: moto's change-set execution (what
  `cdk deploy` uses) creates them in template order and ignores DependsOn (an API Gateway
  deployment created before its methods fails). CloudFormation itself ignores the order.

MOTO_LACKS is the table the README prints (readme_table): the resource types of this stack that
only a real AWS account exercises. The deploy test asserts it equals the types the synthesized
template actually uses that moto lacks, so neither side can drift.
"""

from __future__ import annotations

import copy
import re
from typing import Any

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"

# type -> what it is in edgeloop; every type of the stack that moto's CloudFormation skips.
MOTO_LACKS: dict[str, str] = {
    "AWS::ApiGateway::Account": "API Gateway's CloudWatch logging role for the account",
    "AWS::ApiGateway::RequestValidator": "request validation of the fleet status API",
    "AWS::ApiGateway::Stage": "the fleet status API's stage (access logs, throttling)",
    "AWS::Athena::WorkGroup": "the Athena work group of the query layer",
    "AWS::CDK::Metadata": "CDK's version reporting (not an AWS service resource)",
    "AWS::CloudWatch::Alarm": "the alarms on functions, queues and rollouts",
    "AWS::GreengrassV2::ComponentVersion": "the Gateway and ModelRunner components, from the repo's recipes",
    "AWS::GreengrassV2::Deployment": "the continuous base deployment of the components to the gateways' thing group",
    "AWS::Glue::Database": "the Glue catalog database of the data lake",
    "AWS::Glue::Table": "the Glue tables over the curated, rollup and pack data",
    "AWS::IoT::ThingGroup": "the gateways' thing group the base deployment targets",
    "AWS::IoT::TopicRule": "the IoT rules routing telemetry, announcements, status and lifecycle events",
    "AWS::Lambda::EventInvokeConfig": "the functions' asynchronous retry and failure destinations",
    "AWS::S3::BucketPolicy": "the buckets' TLS-only and access policies",
    "AWS::SNS::TopicPolicy": "the alarm topic's policy",
    "AWS::SQS::QueuePolicy": "the dead-letter queues' policies",
    "AWS::SageMaker::Pipeline": "the training pipeline definition",
}
CUSTOM_RESOURCE = "AWS::CloudFormation::CustomResource"
SSM_VALUE_TYPE = "AWS::SSM::Parameter::Value<"
PUBLIC_SSM = "/aws/"


def moto_supports(resource_type: str) -> bool:
    """Whether moto's CloudFormation creates resources of this type (custom resources: no, their
    provider Lambda cannot run in moto without Docker)."""
    from moto.cloudformation.parsing import NULL_MODELS, get_model_map

    if resource_type.startswith("Custom::") or resource_type == CUSTOM_RESOURCE:
        return False
    return resource_type in get_model_map() and resource_type not in NULL_MODELS


def unsupported_types(template: dict[str, Any]) -> set[str]:
    return {r["Type"] for r in template["Resources"].values() if not moto_supports(r["Type"])}


def placeholder(logical_id: str, attribute: str | None = None) -> str:
    """What a reference to a removed resource becomes: an ARN-shaped string that names it."""
    suffix = f"/{attribute}" if attribute else ""
    return f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:not-in-moto/{logical_id}{suffix}"


def without_unsupported(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The template without the resources of the MOTO_LACKS types (and with placeholders for AWS's
    public SSM parameters), and {logical id: type} removed."""
    removed = {
        logical_id: resource["Type"]
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] in MOTO_LACKS
    }
    result = with_public_parameters_as_placeholders(template)
    kept = {
        logical_id: _without_dependencies(resource, removed)
        for logical_id, resource in result["Resources"].items()
        if logical_id not in removed
    }
    result["Resources"] = {logical_id: kept[logical_id] for logical_id in _dependencies_first(kept)}
    return _replace_references(result, removed), removed


def public_parameters(template: dict[str, Any]) -> dict[str, str]:
    """{template parameter: SSM path} of the parameters read from AWS's public SSM parameters."""
    return {
        name: parameter["Default"]
        for name, parameter in template.get("Parameters", {}).items()
        if parameter["Type"].startswith(SSM_VALUE_TYPE) and str(parameter.get("Default", "")).startswith(PUBLIC_SSM)
    }


def with_public_parameters_as_placeholders(template: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(template)
    for name, path in public_parameters(template).items():
        value = f"arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}:1"  # the stack reads layer ARNs only
        result["Parameters"][name] = {"Type": "String", "Default": value, "Description": f"was SSM {path}"}
    return result


def _dependencies_first(resources: dict[str, Any]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()

    def place(logical_id: str, path: tuple[str, ...]) -> None:
        if logical_id in placed:
            return
        if logical_id in path:
            raise ValueError(f"DependsOn cycle: {' -> '.join((*path, logical_id))}")
        depends = resources[logical_id].get("DependsOn", [])
        for dependency in [depends] if isinstance(depends, str) else depends:
            place(dependency, (*path, logical_id))
        placed.add(logical_id)
        order.append(logical_id)

    for logical_id in resources:
        place(logical_id, ())
    return order


def _without_dependencies(resource: dict[str, Any], removed: dict[str, str]) -> dict[str, Any]:
    depends = resource.get("DependsOn")
    if depends is None:
        return resource
    kept = [d for d in ([depends] if isinstance(depends, str) else depends) if d not in removed]
    resource = {k: v for k, v in resource.items() if k != "DependsOn"}
    return {**resource, "DependsOn": kept} if kept else resource


def _replace_references(node: Any, removed: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_replace_references(item, removed) for item in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, value),) = node.items()
        if key == "Ref" and value in removed:
            return placeholder(value)
        if key == "Fn::GetAtt":
            logical_id, _, attribute = value.partition(".") if isinstance(value, str) else (value[0], "", value[1])
            if logical_id in removed:
                return placeholder(logical_id, attribute)
        if key == "Fn::Sub":
            return {key: _substitute(value, removed)}
    return {key: _replace_references(value, removed) for key, value in node.items()}


_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.([A-Za-z0-9.]+))?\}")


def _substitute(value: Any, removed: dict[str, str]) -> Any:
    def replace(text: str) -> str:
        return _SUB_REFERENCE.sub(
            lambda m: placeholder(m[1], m[2]) if m[1] in removed else m[0],
            text,
        )

    if isinstance(value, str):
        return replace(value)
    text, variables = value
    return [replace(text), _replace_references(variables, removed)]


def readme_table() -> str:
    """The README's list of the resource types only a real account exercises."""
    rows = [f"| `{resource_type}` | {what} |" for resource_type, what in sorted(MOTO_LACKS.items())]
    return "\n".join(["| Resource type | What it is in edgeloop |", "|---|---|", *rows])
