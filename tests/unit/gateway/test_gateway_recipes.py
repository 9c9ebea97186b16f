"""Every Greengrass recipe against the recipe reference, and the GDK build output."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from edgeloop import __version__ as PACKAGE_VERSION
from edgeloop.greengrass_components.build import (
    COMPONENT_PACKAGES,
    RANGE_PLACEHOLDER,
    RECIPES_DIR,
    VERSION_PLACEHOLDER,
    artifact_folder,
    build_components,
    compatible_range,
    load_recipe,
    module_closure,
    resolved_recipe,
)
from edgeloop.schemas import names
from edgeloop.schemas.model import GREENGRASS_PLATFORMS

pytestmark = pytest.mark.timeout(120)

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
TOP_LEVEL_KEYS = {
    "RecipeFormatVersion",
    "ComponentName",
    "ComponentVersion",
    "ComponentType",
    "ComponentDescription",
    "ComponentPublisher",
    "ComponentSource",
    "ComponentDependencies",
    "ComponentConfiguration",
    "Manifests",
    "Lifecycle",
}
REQUIRED_KEYS = {"RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests"}
COMPONENT_TYPES = {"aws.greengrass.generic", "aws.greengrass.lambda", "aws.greengrass.plugin", "aws.greengrass.nucleus"}
PLATFORM_OS = {"linux", "windows", "darwin", "*"}
PLATFORM_ARCHITECTURES = {"amd64", "arm", "aarch64", "x86", "*"}
LIFECYCLE_STEPS = {"setEnv", "install", "startup", "run", "shutdown", "recover", "bootstrap"}
STEP_KEYS = {"Script", "RequiresPrivilege", "Skipif", "Timeout", "Setenv"}
# IPC services and the operations their authorization policies may name.
IPC_OPERATIONS = {
    "aws.greengrass.ipc.mqttproxy": {"aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore", "*"},
    "aws.greengrass.ipc.pubsub": {"aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic", "*"},
}
RECIPE_VARIABLE = re.compile(r"\{([a-zA-Z.]+:)?([a-zA-Z]+):([^}]*)\}")
KNOWN_VARIABLES = {
    ("artifacts", "path"),
    ("artifacts", "decompressedPath"),
    ("work", "path"),
    ("kernel", "rootPath"),
    ("iot", "thingName"),
}
# Import name -> the pip distribution that provides it.
DISTRIBUTION = {"awscrt": "awsiotsdk", "awsiot": "awsiotsdk", "botocore": "boto3", "yaml": "pyyaml"}

RECIPES = sorted(RECIPES_DIR.glob("*.yaml"))


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def test_there_is_a_recipe_per_component():
    assert {p.stem for p in RECIPES} == {names.GATEWAY_COMPONENT, names.MODEL_RUNNER_COMPONENT}
    assert set(COMPONENT_PACKAGES) == {p.stem for p in RECIPES}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_follows_the_recipe_reference(path: Path):
    recipe = yaml.safe_load(path.read_text())
    assert REQUIRED_KEYS <= set(recipe) <= TOP_LEVEL_KEYS, set(recipe) ^ TOP_LEVEL_KEYS
    assert recipe["RecipeFormatVersion"] == "2020-01-25"
    assert recipe["ComponentName"] == path.stem
    assert recipe["ComponentVersion"] == VERSION_PLACEHOLDER  # the package version fills it
    assert recipe.get("ComponentType", "aws.greengrass.generic") in COMPONENT_TYPES
    resolved = resolved_recipe(path.stem)
    assert SEMVER.match(resolved["ComponentVersion"]) and resolved["ComponentVersion"] == PACKAGE_VERSION
    for dependency, spec in resolved.get("ComponentDependencies", {}).items():
        assert set(spec) <= {"VersionRequirement", "DependencyType"}, dependency
        assert spec.get("DependencyType", "HARD") in {"HARD", "SOFT"}
        assert re.fullmatch(r"([<>=]{0,2}\d+\.\d+\.\d+\s*)+", spec["VersionRequirement"]), spec


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_access_control_names_real_ipc_operations(path: Path):
    recipe = yaml.safe_load(path.read_text())
    access = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    assert "aws.greengrass.ipc.mqttproxy" in access
    for service, policies in access.items():
        assert service in IPC_OPERATIONS, service
        for policy_id, policy in policies.items():
            assert policy_id.startswith(recipe["ComponentName"] + ":"), policy_id
            assert set(policy) <= {"policyDescription", "operations", "resources"}
            assert policy["operations"] and set(policy["operations"]) <= IPC_OPERATIONS[service], policy
            assert policy["resources"], policy_id
    mqtt_policies = access["aws.greengrass.ipc.mqttproxy"].values()
    # confined to the thing's own topics, the same line as the IoT policy and the mosquitto ACL
    assert all(p["resources"] == [f"{names.TOPIC_ROOT}/{{iot:thingName}}/#"] for p in mqtt_policies)
    local_topics = {
        names.LOCAL_PUBSUB_SAMPLES_TOPIC,
        names.LOCAL_PUBSUB_CONTEXT_TOPIC,
        names.LOCAL_PUBSUB_PREDICTIONS_TOPIC,
        names.LOCAL_PUBSUB_ALERTS_TOPIC,
    }
    for policy in access.get("aws.greengrass.ipc.pubsub", {}).values():
        assert set(policy["resources"]) <= local_topics, policy


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_manifests_cover_the_three_linux_architectures(path: Path):
    recipe = yaml.safe_load(path.read_text())
    name = recipe["ComponentName"]
    platforms = []
    for manifest in recipe["Manifests"]:
        assert set(manifest) <= {"Platform", "Lifecycle", "Artifacts", "Selections", "Name"}
        platform = manifest["Platform"]
        assert platform["os"] in PLATFORM_OS and platform["architecture"] in PLATFORM_ARCHITECTURES
        platforms.append((platform["os"], platform["architecture"]))
        lifecycle = manifest["Lifecycle"]
        assert set(lifecycle) <= LIFECYCLE_STEPS and {"install", "run"} <= set(lifecycle)
        for step in ("install", "run"):
            assert isinstance(lifecycle[step], dict) and set(lifecycle[step]) <= STEP_KEYS
            assert lifecycle[step]["Script"].strip()
        assert f"{{artifacts:decompressedPath}}/{name}" in lifecycle["run"]["Script"]
        (artifact,) = manifest["Artifacts"]
        assert artifact["URI"] == f"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/{name}.zip"
        assert artifact["Unarchive"] == "ZIP"
    assert sorted(platforms) == sorted(("linux", platform) for platform in GREENGRASS_PLATFORMS.values())


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_variables_are_known_and_configured(path: Path):
    recipe = yaml.safe_load(path.read_text())
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    for text in _strings(recipe["Manifests"]):
        for _component, namespace, key in RECIPE_VARIABLE.findall(text):
            if namespace == "configuration":
                assert key.startswith("/") and key[1:] in defaults, f"{text}: {key} has no default"
            else:
                assert (namespace, key) in KNOWN_VARIABLES, f"unknown recipe variable {{{namespace}:{key}}}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_install_step_provides_every_third_party_import(path: Path):
    recipe = yaml.safe_load(path.read_text())
    needed = set()
    for module_path in module_closure(COMPONENT_PACKAGES[recipe["ComponentName"]]).values():
        for node in ast.walk(ast.parse(module_path.read_text())):
            if isinstance(node, ast.Import):
                needed.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                needed.add(node.module.split(".")[0])
    third_party = {DISTRIBUTION.get(m, m) for m in needed if m not in sys.stdlib_module_names and m != "edgeloop"}
    for manifest in recipe["Manifests"]:
        script = manifest["Lifecycle"]["install"]["Script"]
        installed = set(re.findall(r'"([A-Za-z0-9_.-]+)[<>=]', script))
        assert third_party <= installed, f"{manifest['Platform']}: install misses {third_party - installed}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_run_step_module_exists(path: Path):
    recipe = yaml.safe_load(path.read_text())
    package = COMPONENT_PACKAGES[recipe["ComponentName"]][0]
    for manifest in recipe["Manifests"]:
        (module,) = re.findall(r"-m (edgeloop[\w.]+)", manifest["Lifecycle"]["run"]["Script"])
        assert module == package
        assert (module_closure((package,)).get(f"{package}.__main__")) is not None, f"{package} has no __main__"


def test_build_writes_the_gdk_layout(tmp_path: Path):
    written = build_components(tmp_path)
    build = tmp_path / "greengrass-build"
    for recipe_source in RECIPES:
        source = yaml.safe_load(recipe_source.read_text())
        name, version = source["ComponentName"], PACKAGE_VERSION
        recipe = build / "recipes" / f"{name}.yaml"
        artifact = build / "artifacts" / name / version / f"{name}.zip"
        assert recipe in written and artifact in written
        built = yaml.safe_load(recipe.read_text())
        uris = {a["URI"] for m in built["Manifests"] for a in m["Artifacts"]}
        assert uris == {f"s3://BUCKET_NAME/{name}/{version}/{name}.zip"}  # GDK fills the bucket at publish
        with zipfile.ZipFile(artifact) as archive:
            members = set(archive.namelist())
        package_dir = COMPONENT_PACKAGES[name][0].replace(".", "/")
        assert f"{package_dir}/__init__.py" in members
        assert {"edgeloop/__init__.py", "edgeloop/schemas/telemetry.py", "edgeloop/schemas/names.py"} <= members
        assert not any("__pycache__" in m or "tests/" in m for m in members)


def test_gateway_artifact_runs_on_its_own(tmp_path: Path):
    """Unzipped alone (no repo on the path), the gateway package imports and its entry point parses."""
    unpacked = tmp_path / "unpacked"
    result = _run_in_artifact(
        tmp_path,
        names.GATEWAY_COMPONENT,
        "import edgeloop.greengrass_components.gateway.component as c; "
        "assert c.__file__.startswith(" + repr(str(unpacked)) + "), c.__file__; "
        "print(c.parse_args(['--thing-name','gw-1','--site','s','--line-id','line-1','--use-case','u',"
        "'--runtime-version','1.0.0','--buffer-path','/tmp/b.sqlite','--architecture','armv7l']).architecture)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "armv7l"


def test_model_runner_artifact_carries_its_use_case_configs(tmp_path: Path):
    """The runner loads its use case from files beside the code; the zip must ship them."""
    result = _run_in_artifact(
        tmp_path,
        names.MODEL_RUNNER_COMPONENT,
        "from edgeloop.schemas import load_use_case; print(load_use_case('extrusion').target_metric)",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cold_od_average"


def _run_in_artifact(tmp_path: Path, component: str, code: str) -> subprocess.CompletedProcess:
    """Build the components, unzip `component`'s artifact into tmp_path/unpacked and run `code` there,
    with nothing of this repository on the path but the unzipped files."""
    build_components(tmp_path)
    zip_path = next((tmp_path / "greengrass-build" / "artifacts" / component).rglob("*.zip"))
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(zip_path).extractall(unpacked)
    probe = (
        "import sys; sys.path = [p for p in sys.path if 'site-packages' in p or 'lib/python' in p]; "
        f"sys.path.insert(0, {str(unpacked)!r}); " + code
    )
    return subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": "", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"} | _site_packages_env(),
    )


def _site_packages_env() -> dict[str, str]:
    # -S skips site (and with it the editable install of this repo); put plain site-packages back.
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    return {"PYTHONPATH": ":".join(site_packages)}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_default_runtime_version_is_the_shipped_runtime_and_reads_every_tier(path: Path):
    """A gateway installed with the defaults announces the runtime this release ships, and that
    runtime meets every exported tier's minimum (else the orchestrator would exclude it)."""
    from edgeloop.model_runtime.model_format import RUNTIME_VERSION
    from edgeloop.provisioning import default_runtime_version
    from edgeloop.sagemaker_pipelines.steps.export import TIERS
    from edgeloop.schemas.common import semver_key

    configuration = yaml.safe_load(path.read_text())["ComponentConfiguration"]["DefaultConfiguration"]
    assert configuration["runtimeVersion"] == RUNTIME_VERSION == default_runtime_version()
    assert all(semver_key(tier.min_runtime_version) <= semver_key(RUNTIME_VERSION) for tier in TIERS.values())


def test_one_version_for_every_component_and_every_range_on_each_other():
    """Recipes on each other's components name the placeholder; the build fills the package version
    and its compatible range (same major, from this minor on)."""
    for component in COMPONENT_PACKAGES:
        source = yaml.safe_load((RECIPES_DIR / f"{component}.yaml").read_text())
        resolved = resolved_recipe(component)
        assert resolved["ComponentVersion"] == PACKAGE_VERSION
        for dependency, spec in source.get("ComponentDependencies", {}).items():
            if dependency in COMPONENT_PACKAGES:
                assert spec["VersionRequirement"] == RANGE_PLACEHOLDER
                assert resolved["ComponentDependencies"][dependency]["VersionRequirement"] == compatible_range(
                    PACKAGE_VERSION
                )
    runner = yaml.safe_load((RECIPES_DIR / f"{names.MODEL_RUNNER_COMPONENT}.yaml").read_text())
    assert names.GATEWAY_COMPONENT in runner["ComponentDependencies"]


@pytest.mark.parametrize(
    "version, expected", [("0.1.0", ">=0.1.0 <1.0.0"), ("0.1.7", ">=0.1.0 <1.0.0"), ("2.3.4", ">=2.3.0 <3.0.0")]
)
def test_compatible_range(version, expected):
    assert compatible_range(version) == expected


def test_artifact_uri_names_the_folder_the_run_step_reads():
    """The nucleus unzips an artifact into a folder named after its file name without the extension;
    an artifact uploaded under another name (a CDK asset's hash) moves the run step's PYTHONPATH with it."""
    assert artifact_folder("s3://b/com.edgeloop.Gateway/0.1.0/com.edgeloop.Gateway.zip") == "com.edgeloop.Gateway"
    assert artifact_folder("s3://b/0a1b2c.zip") == "0a1b2c"
    recipe = resolved_recipe(names.GATEWAY_COMPONENT, "1.2.3", artifact_uri="s3://bucket/0a1b2c.zip")
    for manifest in recipe["Manifests"]:
        assert [a["URI"] for a in manifest["Artifacts"]] == ["s3://bucket/0a1b2c.zip"]
        assert "PYTHONPATH={artifacts:decompressedPath}/0a1b2c " in manifest["Lifecycle"]["run"]["Script"]
    assert recipe["ComponentVersion"] == "1.2.3"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_install_step_refuses_python_older_than_3_9_with_a_message(path: Path):
    recipe = yaml.safe_load(path.read_text())
    for manifest in recipe["Manifests"]:
        script = manifest["Lifecycle"]["install"]["Script"]
        check, rest = script.split(" && ", 1)
        assert check.startswith("python3 -c ") and "(3, 9)" in check and rest.startswith("python3 -m venv")
        # pydantic evaluates `X | None` annotations on 3.9 only with eval_type_backport
        assert "\"eval_type_backport>=0.2; python_version < '3.10'\"" in rest
    ok = subprocess.run(["sh", "-c", check], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    too_old = subprocess.run(["sh", "-c", check.replace("(3, 9)", "(99, 0)")], capture_output=True, text=True)
    assert too_old.returncode != 0
    assert f"{path.stem} needs Python >= 3.9" in too_old.stderr and "install a newer python3" in too_old.stderr


def test_model_runner_status_interval_is_configurable_with_the_code_default():
    """The recipe's default and the code's fallback (names.DEFAULT_STATUS_INTERVAL_S) are one number."""
    recipe = load_recipe(names.MODEL_RUNNER_COMPONENT)
    default = recipe["ComponentConfiguration"]["DefaultConfiguration"][names.STATUS_INTERVAL_CONFIG_KEY]
    assert float(default) == names.DEFAULT_STATUS_INTERVAL_S
    for manifest in recipe["Manifests"]:
        assert (
            manifest["Lifecycle"]["setEnv"][names.STATUS_INTERVAL_S_ENV]
            == f"{{configuration:/{names.STATUS_INTERVAL_CONFIG_KEY}}}"
        )


def test_gateway_flush_policy_is_configurable_with_the_code_default():
    """The recipe's flush defaults are FlushPolicy()'s, and the run step passes them to the component."""
    from edgeloop.greengrass_components.gateway.component import parse_args
    from edgeloop.greengrass_components.gateway.flush_policy import FlushPolicy

    recipe = load_recipe(names.GATEWAY_COMPONENT)
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    flags = {"--flush-max-latency-s": "flushMaxLatencySeconds", "--flush-target-batch-bytes": "flushTargetBatchBytes"}
    for manifest in recipe["Manifests"]:
        for flag, key in flags.items():
            assert f"{flag} {{configuration:/{key}}}" in manifest["Lifecycle"]["run"]["Script"], (flag, manifest)
    identity = ["--thing-name", "gw-1", "--site", "s", "--line-id", "line-1", "--use-case", "u"]
    identity += ["--runtime-version", "1.0.0", "--buffer-path", "/tmp/b.sqlite"]
    from_recipe = [str(value) for flag, key in flags.items() for value in (flag, defaults[key])]
    assert parse_args(identity + from_recipe).flush == FlushPolicy() == parse_args(identity).flush
    configured = parse_args(identity + ["--flush-max-latency-s", "2", "--flush-target-batch-bytes", "5120"]).flush
    assert configured == FlushPolicy(max_latency_s=2.0, target_batch_bytes=5120)
    with pytest.raises(ValueError, match="target_batch_bytes"):
        parse_args(identity + ["--flush-target-batch-bytes", "200000"])
