"""Every AWS call of the orchestrator, the delivery and provisioning, against botocore's models.

At run time (aws_flows: the real code paths in moto, Greengrass answered after botocore's own
serialization) every call is recorded and validated (botocore_contract): the orchestrator's
handler, enrollment, the Greengrass delivery, provisioning (plain, forced, Greengrass core device,
failed and rolled back). In the source (static_aws_calls) every client method called anywhere in
the project must exist, with keyword names the operation has; the flows must run every call the
orchestrator, delivery, enrollment, registry and provisioning modules write, and the source check
must have found every call site the flows went through. Fakes of AWS clients in the tests and
the local runtime must mirror real operations. Each check fails on a wrong name: the negative
tests below.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aws_flows import (
    delivery_calls,
    fake_account,
    orchestrator_and_enrollment_calls,
    orchestrator_environment,
    provisioning_calls,
)
from botocore.exceptions import ParamValidationError
from botocore_contract import Call, call_problems, fake_client_problems, fake_clients, method_names, recording
from static_aws_calls import StaticCall, static_calls, static_problems

from edgeloop.cloud.aws import client

REPOSITORY = Path(__file__).resolve().parents[3]
# The code whose calls are read: every module of the project (NOT_SOURCE aside), so also the
# wave controller, status intake, the pipeline steps, the local runtime and the CLI.
NOT_SOURCE = {"tests", "node_modules", "cdk.out", "build", "dist"}
# Their calls the flows must make at run time: the orchestrator, delivery (also to an enrolled
# gateway) and provisioning, as the issue names them.
MUST_RUN = (
    "functions/orchestrator/",
    "cloud/fleet/delivery.py",
    "cloud/fleet/enrollment.py",
    "cloud/model_registry.py",
    "edgeloop/provisioning",
)
# Where fakes of AWS clients would live.
FAKE_HOMES = ("tests/**/*.py", "edgeloop/local/**/*.py")


def _files(patterns: tuple[str, ...]) -> list[Path]:
    return sorted(
        {path for pattern in patterns for path in REPOSITORY.glob(pattern) if "__pycache__" not in path.parts}
    )


def _sources() -> list[Path]:
    """The project's Python modules, each once (edgeloop/ links the layer folders)."""
    folders = [
        folder
        for folder in REPOSITORY.iterdir()
        if folder.is_dir()
        and not folder.is_symlink()
        and folder.name not in NOT_SOURCE
        and not folder.name.startswith(".")
        and not folder.name.endswith(".egg-info")
    ]
    found = {path.resolve() for folder in folders for path in folder.rglob("*.py") if "__pycache__" not in path.parts}
    return sorted(path for path in found if path.is_relative_to(REPOSITORY))


@pytest.fixture(scope="module")
def flows(tmp_path_factory) -> dict[str, list[Call]]:
    """The calls of each flow, run once for the module."""
    with pytest.MonkeyPatch.context() as environment:
        for variable, value in orchestrator_environment().items():
            environment.setenv(variable, value)
        rollout, enrollment = orchestrator_and_enrollment_calls()
        return {
            "orchestrator": rollout,
            "enrollment": enrollment,
            "delivery": delivery_calls(),
            "provisioning": provisioning_calls(tmp_path_factory.mktemp("provisioning")),
        }


@pytest.fixture(scope="module")
def written() -> list[StaticCall]:
    """The client calls written in the project's source."""
    return static_calls(_sources(), REPOSITORY)


# --- run time --------------------------------------------------------------------------------------
def test_the_orchestrators_calls_are_valid(flows):
    calls = flows["orchestrator"]
    assert {"DescribeModelPackage", "GetObject", "CreateDeployment", "CreateThingGroup"} <= {c.operation for c in calls}
    assert call_problems(calls) == []


def test_enrollments_calls_are_valid(flows):
    calls = flows["enrollment"]
    assert {"ListModelPackages", "DescribeModelPackage", "CreateDeployment"} <= {c.operation for c in calls}
    assert call_problems(calls) == []


def test_the_greengrass_deliverys_calls_are_valid(flows):
    calls = flows["delivery"]
    assert {c.service for c in calls} == {"iot", "greengrassv2"}
    assert call_problems(calls) == []


def test_provisionings_calls_are_valid(flows):
    calls = flows["provisioning"]
    assert {"CreateKeysAndCertificate", "AttachPolicy", "DeleteThing"} <= {c.operation for c in calls}
    assert call_problems(calls) == []


def test_the_flows_run_every_call_those_modules_make(flows, written):
    """What the source of the orchestrator, delivery, registry and provisioning calls, the flows ran."""
    must_run = {(c.service, c.operation) for c in written if c.where.startswith(MUST_RUN) and c.operation}
    ran = {(call.service, call.operation) for calls in flows.values() for call in calls}
    assert must_run - ran == set()
    assert must_run


def test_the_source_check_finds_every_call_the_flows_made_from_the_scanned_code(flows, written):
    """The reading of the source misses no receiver the code uses: each run-time call from a scanned
    file is at a line where the source check found that operation (a paginator's, in that file: its
    pages are read on another line). Calls through `getattr(client, name)` (keyed_table's writes)
    are visible at run time only."""
    scanned = {str(path.relative_to(REPOSITORY)) for path in _sources()}
    found = set()
    for call in written:
        found.add((call.where.rpartition(":")[0] if call.paginated else call.where, call.operation))
    missed = set()
    for call in (call for calls in flows.values() for call in calls):
        path, _, line = call.site.rpartition(":")
        if path in scanned and "getattr(" not in _line(path, int(line)):
            missed |= {(path if call.paginated else call.site, call.operation)} - found
    assert missed == set()
    assert {c.site.rpartition(":")[0] for calls in flows.values() for c in calls} & scanned


def _line(path: str, number: int) -> str:
    return (REPOSITORY / path).read_text().splitlines()[number - 1]


# --- in the source ---------------------------------------------------------------------------------
def test_every_client_method_called_in_the_source_exists_with_those_keywords(written):
    calls = written
    assert {c.service for c in calls} >= {"iot", "greengrassv2", "sagemaker", "s3", "dynamodb"}
    assert static_problems(calls) == []


def test_fakes_of_aws_clients_mirror_real_operations():
    assert fake_client_problems(fake_clients(_files(FAKE_HOMES), REPOSITORY)) == []


# --- the checks catch what they must ---------------------------------------------------------------
def test_a_wrong_parameter_name_fails_the_run_time_check():
    """Recorded before botocore looks at it: a call botocore refuses is still listed, and flagged."""
    with fake_account(), recording() as calls, pytest.raises(ParamValidationError):
        client("greengrassv2").create_deployment(targetArn="arn:aws:iot:eu-west-1:1:thinggroup/g", deploymentNam="typo")
    problems = call_problems(calls)
    assert len(problems) == 1 and "deploymentNam" in problems[0]


def test_a_wrong_type_or_operation_fails_the_run_time_check():
    wrong_type = Call("iot", "CreateKeysAndCertificate", {"setAsActive": "yes"})
    unknown = Call("greengrassv2", "CreateDeployments", {})
    problems = call_problems([wrong_type, unknown])
    assert "setAsActive" in problems[0] and "CreateDeployments" in problems[1]


def _write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_wrong_methods_and_keywords_fail_the_source_check(tmp_path):
    path = _write(
        tmp_path,
        "wrong.py",
        """
        from edgeloop.cloud.aws import client

        class Delivery:
            def __init__(self, greengrass):
                self.greengrass = greengrass
                self.things = client("iot")

            def deliver(self):
                self.things.add_thing_to_group(thingGroupName="g", thingName="t")
                self.greengrass.create_deployment(targetArn="a", deploymentNam="typo")
                for page in self.things.get_paginator("list_things_in_group").paginate(thingGroupName="g"):
                    pass

        def provision(iot):
            iot.create_keys_and_certificate(setAsActive=True)
            iot.attach_policy(policyName="p", targetArn="c")
        """,
    )
    problems = static_problems(static_calls([path], tmp_path))
    assert [p.split(": ", 1)[0] for p in problems] == ["wrong.py:10", "wrong.py:11", "wrong.py:12", "wrong.py:17"]
    assert "add_thing_to_group" in problems[0] and "deploymentNam" in problems[1]
    assert "list_things_in_group" in problems[2] and "targetArn" in problems[3]


def test_a_fake_client_with_a_wrong_parameter_fails_the_fake_check(tmp_path):
    path = _write(
        tmp_path,
        "fakes.py",
        """
        class FakeGreengrass:
            def create_deployment(self, targetArn, deploymentNam, components=None):
                return {"deploymentId": "d"}

            def get_deploymnt(self, **request):
                return {}

        class Registry:  # a fake by its methods
            def describe_thing(self, thingName):
                return {}

            def create_thing(self, thingName, thingTypeName=None, attributes=None):
                return {}

        class NotAClient:
            def close(self):
                pass
        """,
    )
    found = fake_clients([path], tmp_path)
    assert {(f.service, f.method) for f in found} == {
        ("greengrassv2", "create_deployment"),
        ("greengrassv2", "get_deploymnt"),
        ("iot", "describe_thing"),
        ("iot", "create_thing"),
    }
    problems = fake_client_problems(found)
    assert len(problems) == 3
    assert "deploymentNam" in problems[0] and "get_deploymnt" in problems[1] and "attributes" in problems[2]
    assert "create_deployment" in method_names("greengrassv2")
