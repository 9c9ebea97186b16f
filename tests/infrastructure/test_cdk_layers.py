"""Public layers: ARNs resolved from the publishers' SSM parameters, one Python for runtime, layers and
bytecode, and the synth-time check of code plus layers against Lambda's 250 MB unzipped limit."""

from __future__ import annotations

import json
import re

import pytest

from edgeloop.cdk.constructs.lambda_runtime import LAMBDA_PYTHON, unzipped_bytes
from edgeloop.cdk.constructs.layers import (
    ARCHITECTURE,
    LAYER_SIZES,
    PANDAS_SDK_VERSION,
    POWERTOOLS_VERSION,
    PYTHON_RUNTIME,
    UNZIPPED_LIMIT_BYTES,
    PublishedLayer,
    check_unzipped_size,
    pandas_layer,
    powertools_layer,
)
from edgeloop.schemas import names

SSM_STRING = "AWS::SSM::Parameter::Value<String>"
POWERTOOLS_PARAMETER = f"/aws/service/powertools/python/arm64/python3.11/{POWERTOOLS_VERSION}"
PANDAS_PARAMETER = f"/aws/service/aws-sdk-pandas/{PANDAS_SDK_VERSION}/py3.11/arm64/layer-arn"
# Accounts that publish the two layers in some region or partition (none may appear in the template).
PUBLISHER_ACCOUNTS = ("017000801446", "336392948345", "839552336658", "498634801083", "165087284144", "165093116878")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app

    _, stack = build_app(
        outdir=str(tmp_path_factory.mktemp("cdk-out")), staging_dir=tmp_path_factory.mktemp("lambda-staging")
    )
    return Template.from_stack(stack).to_json()


@pytest.fixture(scope="module")
def functions(template) -> dict[str, dict]:
    """names.FUNCTIONS key -> the function's properties."""
    by_handler = {
        r["Properties"]["Handler"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function" and "Handler" in r["Properties"]
    }
    return {key: by_handler[handler] for key, handler in names.FUNCTIONS.items() if handler in by_handler}


def _layer_parameter_names(template: dict, props: dict) -> list[str]:
    found = []
    for layer in props["Layers"]:
        assert set(layer) == {"Ref"}, f"a layer that is not a parameter reference: {layer}"
        parameter = template["Parameters"][layer["Ref"]]
        assert parameter["Type"] == SSM_STRING
        found.append(parameter["Default"])
    return found


def test_every_layer_arn_comes_from_a_pinned_ssm_public_parameter(template, functions):
    assert functions
    for key, props in functions.items():
        parameters = _layer_parameter_names(template, props)
        assert parameters[0] == POWERTOOLS_PARAMETER, key
        assert set(parameters) <= {POWERTOOLS_PARAMETER, PANDAS_PARAMETER}, key
        assert not any(p.endswith("/latest") for p in parameters)
    # the ingest function runs for every telemetry message: Powertools only, no pandas layer
    assert _layer_parameter_names(template, functions["ingest"]) == [POWERTOOLS_PARAMETER]
    assert any(PANDAS_PARAMETER in _layer_parameter_names(template, p) for p in functions.values())


def test_the_template_holds_no_layer_arn_and_no_publisher_account(template):
    text = json.dumps(template)
    assert not re.search(r":layer:", text)
    for account in PUBLISHER_ACCOUNTS:
        assert account not in text


def test_runtime_architecture_layers_and_bytecode_share_one_python(functions):
    python = f"{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}"
    assert PYTHON_RUNTIME.name == f"python{python}"
    for key, props in functions.items():
        assert props["Runtime"] == f"python{python}", key
        assert props["Architectures"] == [ARCHITECTURE.name], key
    assert f"/python{python}/" in powertools_layer().parameter_name
    assert f"/py{python}/" in pandas_layer().parameter_name


def test_every_pinned_layer_has_a_recorded_size_with_its_source():
    python = f"{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}"
    for layer in (powertools_layer(), pandas_layer()):
        row = LAYER_SIZES[(layer.key, layer.package_version, python, ARCHITECTURE.name)]
        assert 1_000_000 < row.unzipped_bytes < UNZIPPED_LIMIT_BYTES and row.source
    with pytest.raises(ValueError, match="no recorded unzipped size.*LAYER_SIZES"):
        _ = powertools_layer("0.0.1").unzipped_bytes


def test_the_size_check_passes_the_real_asset_and_fails_an_oversized_one(tmp_path):
    from edgeloop.cdk.lambda_asset import stage_lambda_asset

    layers = [powertools_layer(), pandas_layer()]
    asset_bytes = unzipped_bytes(stage_lambda_asset(tmp_path))
    total = check_unzipped_size("compaction", asset_bytes, layers)
    assert total == asset_bytes + sum(layer.unzipped_bytes for layer in layers) <= UNZIPPED_LIMIT_BYTES
    room = UNZIPPED_LIMIT_BYTES - sum(layer.unzipped_bytes for layer in layers)
    assert check_unzipped_size("compaction", room, layers) == UNZIPPED_LIMIT_BYTES
    with pytest.raises(ValueError, match=r"function compaction: code .* over Lambda's limit of 262\.1 MB"):
        check_unzipped_size("compaction", room + 1, layers)


def test_a_function_whose_code_and_layers_exceed_the_limit_fails_the_synth(tmp_path):
    import aws_cdk as cdk
    from aws_cdk import aws_lambda as lambda_

    from edgeloop.cdk.constructs.functions import FunctionFactory
    from edgeloop.cdk.constructs.layers import PublicLayers
    from edgeloop.cdk.constructs.monitoring import Monitoring

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "handler.py").write_text("def lambda_handler(event, context): ...\n")
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "out")), "SizeProbe")
    layers = PublicLayers(stack, "Layers")
    factory = FunctionFactory.from_asset(tmp_path / "code", layers=layers, monitoring=Monitoring(stack, "Monitoring"))
    assert 0 < factory.code_bytes < 1000
    factory.create(stack, "ingest", environment={}, description="fits")
    oversized = FunctionFactory(
        code=lambda_.Code.from_asset(str(tmp_path / "code")),
        layers=layers,
        monitoring=factory.monitoring,
        code_bytes=UNZIPPED_LIMIT_BYTES - layers.powertools_spec.unzipped_bytes - layers.pandas_spec.unzipped_bytes + 1,
    )
    oversized.create(stack, "context", environment={}, description="fits without the pandas layer")
    with pytest.raises(ValueError, match="function compaction: .*pandas.*over Lambda's limit"):
        oversized.create(stack, "compaction", environment={}, needs_pandas=True, description="too big")


def test_published_layer_is_a_value_object():
    assert powertools_layer() == PublishedLayer("powertools", POWERTOOLS_VERSION, POWERTOOLS_PARAMETER)
    assert pandas_layer() == PublishedLayer("aws-sdk-pandas", PANDAS_SDK_VERSION, PANDAS_PARAMETER)
