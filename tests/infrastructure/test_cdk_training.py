"""Training in CDK (cdk/constructs/training.py): Model Package Groups, the SageMaker pipeline built
from the committed definition template, the pipeline role, the data scientist policy, the step code
archive and SageMaker's XGBoost image (no Docker image asset; the per-region check is in
test_cdk_training_regions.py).

Storage + Training are synthesized in a probe stack with cdk-nag's AWS Solutions checks (the
fixture raises on an unacknowledged finding), once with two lines and once for a use case without
lines; cfn-lint runs on both templates. The whole app is synthesized once for the wiring and outputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeloop.schemas import names

pytestmark = pytest.mark.slow

USE_CASE = "extrusion"
LINES = ("line-1", "line_2")
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
# What CloudFormation's Fn::Sub would put in, for a definition to be parsed as deployed.
FAKE_VALUES = {
    "DataBucket": "data-bucket-0123",
    "ModelBucket": "model-bucket-0123",
    "StepImageUri": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:3.2-0",
    "ServingImageUri": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost-serving:3.2-0",
    "CodeS3Uri": "s3://cdk-assets-bucket/abc.gz",
    "PipelineRoleArn": "arn:aws:iam::123456789012:role/edgeloop-pipeline",
    "AWS::Region": "eu-west-1",
}
# Actions that may have Resource "*" in the pipeline role: AWS defines no resource type for them.
STAR_ACTIONS = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "sagemaker:ListModelPackages"}


# --- fixtures ----------------------------------------------------------------------------------------
@dataclass
class Probe:
    stack: Any
    storage: Any
    training: Any
    template: dict
    outdir: Path

    def logical_id(self, construct) -> str:
        return self.stack.get_logical_id(construct.node.default_child)


def synth_probe(outdir: Path, *, use_case: str, line_ids: tuple[str, ...], context: dict | None = None) -> Probe:
    """Storage + Training in a stack of their own, checked by cdk-nag (raises on a finding)."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template
    from cdk_nag import AwsSolutionsChecks

    from edgeloop.cdk.app import FEATURE_FLAGS
    from edgeloop.cdk.constructs.storage import Storage
    from edgeloop.cdk.constructs.training import Training

    app = cdk.App(context={**FEATURE_FLAGS, **(context or {})}, outdir=str(outdir))
    stack = cdk.Stack(app, "TrainingProbe")
    storage = Storage(stack, "Storage")
    training = Training(stack, "Training", storage=storage, use_case=use_case, line_ids=line_ids)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    template = Template.from_stack(stack).to_json()
    app.synth()
    return Probe(stack, storage, training, template, outdir)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Probe:
    return synth_probe(tmp_path_factory.mktemp("cdk-out"), use_case=USE_CASE, line_ids=LINES)


@pytest.fixture(scope="module")
def template(probe) -> dict:
    return probe.template


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]


@pytest.fixture(scope="module")
def training(probe):
    return probe.training


def of_type(resources: dict, cfn_type: str) -> dict[str, dict]:
    return {logical_id: r["Properties"] for logical_id, r in resources.items() if r["Type"] == cfn_type}


@pytest.fixture(scope="module")
def pipeline(resources) -> dict:
    (properties,) = of_type(resources, "AWS::SageMaker::Pipeline").values()
    return properties


@pytest.fixture(scope="module")
def role_statements(probe, resources) -> list[dict]:
    role_id = probe.logical_id(probe.training.role)
    found = []
    for properties in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in properties["Roles"]:
            found += properties["PolicyDocument"]["Statement"]
    assert found
    return found


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def flat(value) -> str:
    """A resolved resource as text: Ref/GetAtt/Join rendered the way cdk-nag does."""
    from edgeloop.cdk.constructs.nag import flatten_reference

    return flatten_reference(value)


# --- groups, pipeline, outputs ---------------------------------------------------------------------
def test_one_model_package_group_per_configured_line(resources):
    groups = of_type(resources, "AWS::SageMaker::ModelPackageGroup").values()
    assert sorted(g["ModelPackageGroupName"] for g in groups) == sorted(
        names.model_package_group_name(USE_CASE, line) for line in LINES
    )
    assert sorted(g["ModelPackageGroupName"] for g in groups) == [
        "edgeloop-extrusion-line-1",
        "edgeloop-extrusion-line-2",
    ]
    for group in groups:
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        assert tags["edgeloop:use_case"] == USE_CASE and tags["edgeloop:line_id"] in LINES


def test_pipeline_is_named_from_names_and_runs_as_the_pipeline_role(probe, pipeline):
    assert pipeline["PipelineName"] == names.pipeline_name(USE_CASE) == "edgeloop-extrusion"
    assert pipeline["RoleArn"] == {"Fn::GetAtt": [probe.logical_id(probe.training.role), "Arn"]}


@pytest.fixture(scope="module")
def full_stack(tmp_path_factory):
    """The app as `cdk synth` builds it, with lines from context: the wiring and the outputs."""
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app
    from edgeloop.cdk.constructs.config import LINE_IDS_KEY

    _, stack = build_app(
        context={LINE_IDS_KEY: ",".join(LINES)},
        outdir=str(tmp_path_factory.mktemp("stack-out")),
        staging_dir=tmp_path_factory.mktemp("staging"),
    )
    return stack, Template.from_stack(stack).to_json()  # raises on an unacknowledged cdk-nag finding


def test_the_stack_builds_training_from_context_and_outputs_its_names(full_stack):
    stack, template = full_stack
    outputs = {name: output["Value"] for name, output in template["Outputs"].items()}
    role_id = stack.get_logical_id(stack.training.role.node.default_child)
    assert outputs["PipelineName"] == names.pipeline_name(USE_CASE)
    assert outputs["PipelineRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert outputs["ModelPackageGroupNames"].split(",") == [
        names.model_package_group_name(USE_CASE, line) for line in LINES
    ]
    policy_id = stack.get_logical_id(stack.training.data_scientists.node.default_child)
    assert outputs["DataScientistPolicyArn"] == {"Ref": policy_id}
    groups = of_type(template["Resources"], "AWS::SageMaker::ModelPackageGroup").values()
    assert len(groups) == len(LINES)


# --- the definition ----------------------------------------------------------------------------------
def substituted(pipeline: dict) -> tuple[str, dict, dict]:
    """(template text, Fn::Sub variables, the definition as CloudFormation would deploy it)."""
    text, variables = pipeline["PipelineDefinition"]["PipelineDefinitionBody"]["Fn::Sub"]

    def fill(match: re.Match) -> str:
        name = match.group(1)
        assert name in variables or name.startswith("AWS::"), (
            f"${{{name}}} is neither a variable nor a pseudo parameter"
        )
        if isinstance(variables.get(name), str):  # a synth-time literal (the signing key's secret ARN)
            return variables[name]
        return FAKE_VALUES[name]

    deployed = PLACEHOLDER.sub(fill, text)
    assert "${" not in deployed
    return text, variables, json.loads(deployed)


def test_the_deployed_definition_is_the_committed_template_with_every_placeholder_resolved(training, pipeline):
    from edgeloop.cdk.constructs.training import PLACEHOLDERS, definition_template

    text, variables, definition = substituted(pipeline)
    assert text == definition_template(USE_CASE)  # committed snapshot, unchanged
    assert set(variables) == set(PLACEHOLDERS)
    used = set(PLACEHOLDER.findall(text))
    assert used <= {*PLACEHOLDERS, "AWS::Region"}, used
    assert {"DataBucket", "StepImageUri", "ServingImageUri", "CodeS3Uri", "PipelineRoleArn"} <= used
    assert definition["Steps"], "a pipeline without steps"


def test_definition_variables_point_at_this_stacks_resources(probe, pipeline):
    _, variables, _ = substituted(pipeline)
    assert variables["DataBucket"] == {"Ref": probe.logical_id(probe.storage.data)}
    assert variables["ModelBucket"] == {"Ref": probe.logical_id(probe.storage.models)}
    assert variables["PipelineRoleArn"] == {"Fn::GetAtt": [probe.logical_id(probe.training.role), "Arn"]}
    mapping = probe.stack.get_logical_id(probe.training.images.mapping)
    for variable, key in (("StepImageUri", "StepImage"), ("ServingImageUri", "ServingImage")):
        assert variables[variable] == {"Fn::FindInMap": [mapping, {"Ref": "AWS::Region"}, key]}
    code = flat(variables["CodeS3Uri"])
    assert code.startswith("s3://") and code.endswith(f"{probe.training.code.asset_hash}.gz")


def _strings(node):
    """Every string in a definition; a Std:Join is one string, its runtime values rendered as <runtime>."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict) and "Std:Join" in node:
        join = node["Std:Join"]
        yield join["On"].join(v if isinstance(v, str) else "<runtime>" for v in join["Values"])
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_every_step_runs_the_step_image_as_the_pipeline_role(pipeline):
    """The XGBoost image runs every job; the serving image is only the register step's argument."""
    _, _, definition = substituted(pipeline)
    images = {s for s in _strings(definition) if ".dkr.ecr." in s}
    roles = {s for s in _strings(definition) if s.startswith("arn:aws:iam::")}
    assert images == {FAKE_VALUES["StepImageUri"], FAKE_VALUES["ServingImageUri"]}
    assert roles == {FAKE_VALUES["PipelineRoleArn"]}
    run_by = [
        *(s["Arguments"]["AppSpecification"]["ImageUri"] for s in _all_steps(definition) if s["Type"] == "Processing"),
        *(
            s["Arguments"]["AlgorithmSpecification"]["TrainingImage"]
            for s in _all_steps(definition)
            if s["Type"] == "Training"
        ),
    ]
    assert len(run_by) == 4 and set(run_by) == {FAKE_VALUES["StepImageUri"]}
    (register,) = [s for s in _all_steps(definition) if s["Name"] == "Register"]
    arguments = register["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert arguments[arguments.index("--serving-image") + 1] == FAKE_VALUES["ServingImageUri"]


def _all_steps(definition: dict) -> list[dict]:
    """The steps, the condition step's branches included."""
    steps = []
    for step in definition["Steps"]:
        steps.append(step)
        for branch in ("IfSteps", "ElseSteps"):
            steps += step.get("Arguments", {}).get(branch, [])
    return steps


def test_the_pipeline_reads_and_writes_only_where_its_role_may(training, pipeline):
    _, _, definition = substituted(pipeline)
    data = f"s3://{FAKE_VALUES['DataBucket']}/"
    models = f"s3://{FAKE_VALUES['ModelBucket']}/"
    granted = (
        *(f"{data}{prefix}/" for prefix in (*_data_read_prefixes(), training.work_prefix)),
        f"{models}{names.MODELS_PREFIX}/",
    )
    uris = [s for s in _strings(definition) if s.startswith("s3://")]
    assert any(uri.startswith(f"{data}{training.work_prefix}/<runtime>/") for uri in uris), uris
    for uri in uris:
        if uri == FAKE_VALUES["CodeS3Uri"]:
            continue
        assert uri.startswith(granted), f"{uri} is outside the prefixes the pipeline role may use"


def _data_read_prefixes():
    from edgeloop.cdk.constructs.training import DATA_READ_PREFIXES

    return DATA_READ_PREFIXES


# --- the pipeline role ---------------------------------------------------------------------------------
def test_pipeline_role_is_assumed_by_sagemaker_only(probe, resources):
    role = resources[probe.logical_id(probe.training.role)]["Properties"]
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert "ManagedPolicyArns" not in role


def test_pipeline_role_uses_resource_star_only_where_aws_requires_it(role_statements):
    for statement in role_statements:
        actions = as_list(statement["Action"])
        assert statement["Effect"] == "Allow"
        assert not [a for a in actions if "*" in a], actions
        if "*" in as_list(statement["Resource"]):
            assert set(actions) <= STAR_ACTIONS, actions
            if "cloudwatch:PutMetricData" in actions:
                assert statement["Condition"]["StringLike"]["cloudwatch:namespace"]


def test_pipeline_role_s3_access_is_limited_to_its_prefixes(training, role_statements):
    s3_statements = [s for s in role_statements if any(a.startswith("s3:") for a in as_list(s["Action"]))]
    allowed = {f"{p}/*" for p in _data_read_prefixes()} | {f"{training.work_prefix}/*", f"{names.MODELS_PREFIX}/*"}
    writes = set()
    for statement in s3_statements:
        actions = as_list(statement["Action"])
        assert not [a for a in actions if a.startswith("s3:Delete") or a.startswith("s3:PutBucket")], actions
        for resource in map(flat, as_list(statement["Resource"])):
            if resource.startswith("arn:<AWS::Partition>:s3:::"):  # the code asset: its one key, no wildcard
                assert "*" not in resource and actions in (["s3:GetObject"], ["s3:ListBucket"]), statement
                key = resource if actions == ["s3:GetObject"] else statement["Condition"]["StringEquals"]["s3:prefix"]
                assert key.endswith(".gz"), statement
            elif actions == ["s3:ListBucket"]:
                assert resource.endswith(".Arn>")  # a bucket of the stack, listed under the granted prefixes only
                assert set(statement["Condition"]["StringLike"]["s3:prefix"]) <= allowed
            else:
                assert resource.split(".Arn>/", 1)[1] in allowed, resource
                if "s3:PutObject" in actions:
                    writes.add(resource.split(".Arn>/", 1)[1])
    assert writes == {f"{training.work_prefix}/*", f"{names.MODELS_PREFIX}/*"}


def test_pipeline_role_sagemaker_access_is_scoped_to_pipeline_jobs_and_this_use_cases_groups(training, role_statements):
    group_prefix = names.model_package_group_name(USE_CASE, "")
    assert group_prefix == "edgeloop-extrusion-"
    granted: dict[str, set[str]] = {}
    for statement in role_statements:
        for action in as_list(statement["Action"]):
            if action.startswith("sagemaker:"):
                granted.setdefault(action, set()).update(map(flat, as_list(statement["Resource"])))
    for action, resources in granted.items():
        for resource in resources:
            if resource == "*":
                assert action == "sagemaker:ListModelPackages"
            elif action.endswith(("ProcessingJob", "TrainingJob")) or action == "sagemaker:AddTags":
                assert re.search(r":(processing|training)-job/pipelines-\*$", resource), (action, resource)
            else:
                assert f"model-package-group/{group_prefix}*" in resource or (
                    f"model-package/{group_prefix}*/*" in resource
                ), (action, resource)
    for action in ("CreateModelPackage", "DescribeModelPackage", "CreateModelPackageGroup", "CreateProcessingJob"):
        assert f"sagemaker:{action}" in granted
    assert "sagemaker:UpdateModelPackage" not in granted  # approval is a person's decision, not the pipeline's
    assert "sagemaker:DeleteModelPackage" not in granted


def test_pipeline_role_passes_only_itself_and_only_to_sagemaker(probe, role_statements):
    (pass_role,) = [s for s in role_statements if "iam:PassRole" in as_list(s["Action"])]
    assert as_list(pass_role["Action"]) == ["iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::GetAtt": [probe.logical_id(probe.training.role), "Arn"]}
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_pipeline_role_pulls_only_the_xgboost_repository_and_logs_only_to_sagemaker_groups(probe, role_statements):
    """The region's sagemaker-xgboost repository in AWS's registry account, from the same mapping as the image."""
    pulls = [s for s in role_statements if "ecr:BatchGetImage" in as_list(s["Action"])]
    (pull,) = pulls
    mapping = probe.stack.get_logical_id(probe.training.images.mapping)
    parts = pull["Resource"]["Fn::Join"][1]
    assert {"Fn::FindInMap": [mapping, {"Ref": "AWS::Region"}, "RegistryAccount"]} in parts
    assert {"Fn::FindInMap": [mapping, {"Ref": "AWS::Region"}, "Repository"]} in parts
    assert ":ecr:" in flat(pull["Resource"]) and ":repository/" in flat(pull["Resource"])
    (logs,) = [s for s in role_statements if "logs:PutLogEvents" in as_list(s["Action"])]
    assert all(":log-group:/aws/sagemaker/*" in flat(r) for r in as_list(logs["Resource"]))


# --- the data scientist policy ---------------------------------------------------------------------------
def test_data_scientist_policy_runs_this_pipeline_and_approves_this_use_cases_models(probe, resources):
    policy = resources[probe.logical_id(probe.training.data_scientists)]["Properties"]
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    pipeline_arn = f":pipeline/{names.pipeline_name(USE_CASE)}"
    assert "sagemaker:StartPipelineExecution" in as_list(statements["RunThePipeline"]["Action"])
    assert flat(statements["RunThePipeline"]["Resource"]).endswith(pipeline_arn)
    assert flat(statements["FollowExecutions"]["Resource"]).endswith(f"{pipeline_arn}/execution/*")
    assert as_list(statements["ApproveModels"]["Action"]) == ["sagemaker:UpdateModelPackage"]
    assert flat(statements["ApproveModels"]["Resource"]).endswith(":model-package/edgeloop-extrusion-*/*")
    assert set(as_list(statements["ListTheRegistry"]["Action"])) == {
        "sagemaker:ListModelPackages",
        "sagemaker:ListModelPackageGroups",
    }
    for sid, statement in statements.items():
        actions = as_list(statement["Action"])
        assert not [a for a in actions if "*" in a or "Delete" in a or "CreatePipeline" in a], (sid, actions)
        if "*" in as_list(statement["Resource"]):
            assert sid == "ListTheRegistry"


# --- the step code and image: no Docker ------------------------------------------------------------------
def test_the_cloud_assembly_has_no_docker_image_asset(probe):
    """`cdk deploy` needs no Docker daemon: nothing in the assembly is a container image to build."""
    assets = json.loads((probe.outdir / f"{probe.stack.artifact_id}.assets.json").read_text())
    assert not assets.get("dockerImages")
    manifest = json.loads((probe.outdir / "manifest.json").read_text())
    assert "dockerImages" not in json.dumps(manifest).replace('"dockerImages": {}', "")
    types = {r["Type"] for r in probe.template["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::ECR::")}


def test_the_step_code_asset_is_the_archive_of_the_step_modules_with_pinned_requirements(probe):
    import tarfile

    from edgeloop.sagemaker_pipelines import step_code

    assets = json.loads((probe.outdir / f"{probe.stack.artifact_id}.assets.json").read_text())
    source = assets["files"][probe.training.code.asset_hash]["source"]
    assert source["packaging"] == "file" and source["path"].endswith(".gz")
    with tarfile.open(probe.outdir / source["path"], "r:gz") as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    assert members == step_code.archive_members()
    assert "edgeloop/sagemaker_pipelines/steps/train.py" in members
    assert b"xgboost" not in members["requirements.txt"]  # the container's own XGBoost (steps/images.py)


# --- a use case without configured lines --------------------------------------------------------------
@pytest.fixture(scope="module")
def probe_without_lines(tmp_path_factory) -> dict:
    return synth_probe(tmp_path_factory.mktemp("probe-out"), use_case="injection_molding", line_ids=()).template


def test_without_lines_no_group_is_created_but_the_register_step_may_create_them(probe_without_lines):
    resources = probe_without_lines["Resources"]
    assert not of_type(resources, "AWS::SageMaker::ModelPackageGroup")
    (pipeline,) = of_type(resources, "AWS::SageMaker::Pipeline").values()
    assert pipeline["PipelineName"] == names.pipeline_name("injection_molding") == "edgeloop-injection-molding"
    substituted(pipeline)
    prefix = names.model_package_group_name("injection_molding", "")
    creates = [
        s
        for p in of_type(resources, "AWS::IAM::Policy").values()
        for s in p["PolicyDocument"]["Statement"]
        if "sagemaker:CreateModelPackageGroup" in as_list(s["Action"])
    ]
    assert [flat(s["Resource"]).endswith(f":model-package-group/{prefix}*") for s in creates] == [True]


def test_cfn_lint_finds_no_error_in_the_training_template(probe_without_lines, template, signed_probe, tmp_path):
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    paths = []
    templates = (("without-lines", probe_without_lines), ("with-lines", template), ("signed", signed_probe.template))
    for name, body in templates:
        path = tmp_path / f"{name}.template.json"
        path.write_text(json.dumps(body))
        paths.append(str(path))
    completed = subprocess.run(
        [str(cfn_lint), "--non-zero-exit-code", "error", "--ignore-checks", "W3005", "--", *paths],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


# --- edgeloop:lineIds ------------------------------------------------------------------------------------
def _config(value):
    from edgeloop.cdk.constructs.config import LINE_IDS_KEY, StackConfig

    return StackConfig.from_context({LINE_IDS_KEY: value}.get)


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ()),
        ("", ()),
        ([], ()),
        ("line-1", ("line-1",)),
        ("line-1, line_2", ("line-1", "line_2")),
        (["a1", "b2"], ("a1", "b2")),
    ],
)
def test_line_ids_from_a_json_list_or_a_comma_string(value, expected):
    assert _config(value).line_ids == expected


@pytest.mark.parametrize(
    "value, culprit",
    [
        ("Line-1", "Line-1"),
        ("line-1,,line-2", "line-1,,line-2"),
        (["line-1", 7], "7"),
        ("line 1", "line 1"),
        ("line-1,line-1", "listed twice"),
        ({"line": "1"}, "not a list"),
        ("x" * 60, "longer than 63"),
    ],
)
def test_bad_line_ids_name_the_key_and_the_value(value, culprit):
    from edgeloop.cdk.constructs.config import LINE_IDS_KEY, ConfigError

    with pytest.raises(ConfigError) as raised:
        _config(value)
    message = str(raised.value)
    assert LINE_IDS_KEY in message and repr(value) in message and culprit in message


# --- edgeloop:modelSigningKeySecretArn --------------------------------------------------------------------
SIGNING_KEY_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:edgeloop/model-signing-AbCdEf"


@pytest.fixture(scope="module")
def signed_probe(tmp_path_factory) -> Probe:
    from edgeloop.cdk.constructs.config import MODEL_SIGNING_KEY_SECRET_ARN_KEY

    return synth_probe(
        tmp_path_factory.mktemp("signed-out"),
        use_case=USE_CASE,
        line_ids=LINES,
        context={MODEL_SIGNING_KEY_SECRET_ARN_KEY: SIGNING_KEY_SECRET_ARN},
    )


def _register_environment(pipeline: dict) -> dict:
    _, _, definition = substituted(pipeline)
    (condition,) = [s for s in definition["Steps"] if s["Type"] == "Condition"]
    (register,) = [s for s in condition["Arguments"]["IfSteps"] if s["Name"] == "Register"]
    return register["Arguments"]["Environment"]


def _role_statements(probe: Probe) -> list[dict]:
    role_id = probe.logical_id(probe.training.role)
    return [
        statement
        for properties in of_type(probe.template["Resources"], "AWS::IAM::Policy").values()
        if {"Ref": role_id} in properties["Roles"]
        for statement in properties["PolicyDocument"]["Statement"]
    ]


def _signing_output(probe: Probe) -> str:
    (value,) = [
        o["Value"] for name, o in probe.template["Outputs"].items() if name.startswith("TrainingModelPayloadSigning")
    ]
    return value


def _warnings(probe: Probe) -> list[str]:
    from aws_cdk.assertions import Annotations, Match

    found = Annotations.from_stack(probe.stack).find_warning("*", Match.any_value())
    return [str(w.entry.data) for w in found]


def test_with_a_signing_secret_the_register_step_reads_it_and_the_role_may_read_exactly_it(signed_probe):
    pipeline = next(iter(of_type(signed_probe.template["Resources"], "AWS::SageMaker::Pipeline").values()))
    _, variables, _ = substituted(pipeline)
    assert variables["ModelSigningKeySecretArn"] == SIGNING_KEY_SECRET_ARN
    assert _register_environment(pipeline)[names.MODEL_SIGNING_KEY_SECRET_ARN_ENV] == SIGNING_KEY_SECRET_ARN
    secret_statements = [
        s for s in _role_statements(signed_probe) if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]
    assert secret_statements == [
        {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": SIGNING_KEY_SECRET_ARN}
    ]
    assert not [s for s in _role_statements(signed_probe) if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    assert _signing_output(signed_probe) == f"signed with the Ed25519 key in {SIGNING_KEY_SECRET_ARN}"
    assert not [w for w in _warnings(signed_probe) if "UNSIGNED" in w]


def test_without_a_signing_secret_nothing_is_granted_and_the_synth_warns(probe, pipeline, role_statements):
    from edgeloop.cdk.constructs.config import MODEL_SIGNING_KEY_SECRET_ARN_KEY

    _, variables, _ = substituted(pipeline)
    assert variables["ModelSigningKeySecretArn"] == ""
    assert _register_environment(pipeline)[names.MODEL_SIGNING_KEY_SECRET_ARN_ENV] == ""  # register.py: unsigned
    assert not [s for s in role_statements if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))]
    assert _signing_output(probe).startswith("unsigned")
    (warning,) = [w for w in _warnings(probe) if "UNSIGNED" in w]
    assert MODEL_SIGNING_KEY_SECRET_ARN_KEY in warning and "edgeloop:unsignedModelPayloads" in warning


def test_the_app_reads_the_signing_secret_from_context(full_stack):
    stack, _ = full_stack
    assert stack.config.model_signing_key_secret_arn == ""
    assert stack.training.signing_key_secret_arn == ""


@pytest.mark.parametrize(
    "value",
    [
        "edgeloop/model-signing",  # a name: IAM needs the complete ARN
        "arn:aws:s3:::edgeloop/model-signing",
        "arn:aws:secretsmanager:eu-west-1:1234:secret:edgeloop/model-signing-AbCdEf",
        ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:edgeloop/model-signing-AbCdEf"],
    ],
)
def test_a_bad_signing_secret_arn_names_the_key_and_the_value(value):
    from edgeloop.cdk.constructs.config import MODEL_SIGNING_KEY_SECRET_ARN_KEY, ConfigError, StackConfig

    with pytest.raises(ConfigError) as raised:
        StackConfig.from_context({MODEL_SIGNING_KEY_SECRET_ARN_KEY: value}.get)
    message = str(raised.value)
    assert MODEL_SIGNING_KEY_SECRET_ARN_KEY in message and repr(value) in message


def test_the_signing_secret_arn_from_context_is_kept(tmp_path):
    from edgeloop.cdk.constructs.config import MODEL_SIGNING_KEY_SECRET_ARN_KEY, StackConfig

    config = StackConfig.from_context({MODEL_SIGNING_KEY_SECRET_ARN_KEY: SIGNING_KEY_SECRET_ARN}.get)
    assert config.model_signing_key_secret_arn == SIGNING_KEY_SECRET_ARN
    assert StackConfig.from_context({}.get).model_signing_key_secret_arn == ""
