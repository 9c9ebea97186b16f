"""AWS-published Lambda layers that carry the functions' third-party dependencies (no Docker bundling).

The layer ARNs are not written here: both publishers put them in SSM public parameters in every
region they publish to, and the stack reads them at deploy time through CloudFormation parameters of
type `AWS::SSM::Parameter::Value<String>` (`ssm.StringParameter.value_for_string_parameter`). So one
synthesized template deploys in any region without knowing which account publishes the layer there
(AWS SDK for pandas uses other accounts in about a dozen regions, and its layer version numbers
differ from region to region). The parameter names pin a package version, never `latest`, so a
redeploy never changes the functions' dependencies behind our back.

- Powertools for AWS Lambda (Python):
  `/aws/service/powertools/python/<arch>/python3.<minor>/<package version>` (Powertools docs,
  "Lambda Layer" > "Using SSM Parameter Store"; python3.10-3.14, x86_64 and arm64).
- AWS SDK for pandas: `/aws/service/aws-sdk-pandas/<package version>/py3.<minor>/<arch>/layer-arn`
  (aws-sdk-pandas.readthedocs.io, "Install" > "AWS Lambda Layer"; its "Managed Layers" table lists,
  for the 3.16 releases, Python 3.10-3.14 on x86_64 and arm64 in every commercial region). An older revision of
  those docs put the region in the path as well; the current one and its users do not (an SSM
  parameter is regional anyway).

Neither publisher writes these parameters in the China or GovCloud partitions: there, deploy fails
with "parameter not found" instead of creating functions with a wrong layer.

Python version: the staged asset is precompiled to .pyc for exactly one minor version
(cdk/lambda_asset.py), and both layers are per minor version; the runtime and the parameter names
below all derive from lambda_runtime.LAMBDA_PYTHON, so they move together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from .lambda_runtime import LAMBDA_PYTHON

ARCHITECTURE = lambda_.Architecture.ARM_64
PYTHON_RUNTIME = lambda_.Runtime(f"python{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}", lambda_.RuntimeFamily.PYTHON)
_PY = f"{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}"

# The package versions the functions run with. Powertools: the version in constraints.txt, which the
# tests run against. AWS SDK for pandas (the functions use the pandas, numpy and pyarrow it carries,
# not awswrangler itself): 3.16.0, not 3.16.1, whose layer grew by 37 MB to 204 MB unzipped (a new
# Arrow build with ICU; aws/aws-sdk-pandas#3331) and leaves too little room under the limit below.
POWERTOOLS_VERSION = "3.37.0"
PANDAS_SDK_VERSION = "3.16.0"

# Lambda's limit for a function's code plus all its layers, unzipped ("Lambda quotas": 250 MB; the
# service's error message says 262144000 bytes).
UNZIPPED_LIMIT_BYTES = 262_144_000
_MIB = 1024 * 1024


@dataclass(frozen=True)
class LayerSize:
    unzipped_bytes: int
    source: str


# Unzipped sizes of the pinned layers, per (layer, package version, python, architecture): they
# cannot be read at synth (the layer lives in the publisher's account). Raise a pinned version ->
# measure again and add a row; synth fails on a missing row rather than guess.
LAYER_SIZES: dict[tuple[str, str, str, str], LayerSize] = {
    ("powertools", "3.37.0", "3.11", "arm64"): LayerSize(
        unzipped_bytes=29_419_855,
        source="measured 2026-12-06: `pip download --only-binary=:all: --platform manylinux2014_aarch64 "
        "--python-version 3.11 'aws-lambda-powertools[all]==3.37.0'`, the wheels' file sizes summed without "
        "boto3/botocore/s3transfer/urllib3. An upper bound: the layer's build (layer_v3/docker/Dockerfile in "
        "powertools-lambda-python) installs the same, then also drops dateutil, six and jmespath, tests and "
        "bytecode, and strips the shared objects",
    ),
    ("aws-sdk-pandas", "3.16.0", "3.11", "arm64"): LayerSize(
        unzipped_bytes=167 * _MIB + 16 * _MIB,
        source="published: `du -h` of the unzipped awswrangler-layer-3.16.0-py3.13 is 167M "
        "(aws/aws-sdk-pandas#3331), plus a 16 MiB margin for another Python/architecture build. Not "
        "measurable from wheels: the layer carries its own stripped Arrow build (pip's manylinux "
        "pyarrow alone is 133 MB; the wheels of everything the layer installs sum to 283 MB)",
    ),
}


@dataclass(frozen=True)
class PublishedLayer:
    """One AWS-published layer: where its ARN is published, and how big it is unzipped."""

    key: str  # "powertools" | "aws-sdk-pandas"
    package_version: str
    parameter_name: str

    @property
    def unzipped_bytes(self) -> int:
        row = LAYER_SIZES.get((self.key, self.package_version, _PY, ARCHITECTURE.name))
        if row is None:
            raise ValueError(
                f"no recorded unzipped size for the {self.key} {self.package_version} layer "
                f"(python {_PY}, {ARCHITECTURE.name}); measure it and add a row to LAYER_SIZES in cdk/constructs/layers.py"
            )
        return row.unzipped_bytes


def powertools_layer(version: str = POWERTOOLS_VERSION) -> PublishedLayer:
    return PublishedLayer(
        key="powertools",
        package_version=version,
        parameter_name=f"/aws/service/powertools/python/{ARCHITECTURE.name}/python{_PY}/{version}",
    )


def pandas_layer(version: str = PANDAS_SDK_VERSION) -> PublishedLayer:
    return PublishedLayer(
        key="aws-sdk-pandas",
        package_version=version,
        parameter_name=f"/aws/service/aws-sdk-pandas/{version}/py{_PY}/{ARCHITECTURE.name}/layer-arn",
    )


def check_unzipped_size(function: str, code_bytes: int, layers: Iterable[PublishedLayer]) -> int:
    """Raise ValueError when the function's code plus its layers exceed Lambda's unzipped limit."""
    layers = list(layers)
    total = code_bytes + sum(layer.unzipped_bytes for layer in layers)
    if total > UNZIPPED_LIMIT_BYTES:
        parts = ", ".join(
            f"{layer.key} {layer.package_version}: {layer.unzipped_bytes / 1e6:.1f} MB" for layer in layers
        )
        raise ValueError(
            f"function {function}: code ({code_bytes / 1e6:.1f} MB) plus layers ({parts}) is "
            f"{total / 1e6:.1f} MB unzipped, over Lambda's limit of {UNZIPPED_LIMIT_BYTES / 1e6:.1f} MB"
        )
    return total


class PublicLayers(Construct):
    """The two layer references, created once per stack and shared by the functions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        powertools_version: str = POWERTOOLS_VERSION,
        pandas_sdk_version: str = PANDAS_SDK_VERSION,
    ) -> None:
        super().__init__(scope, construct_id)
        self.powertools_spec = powertools_layer(powertools_version)
        self.pandas_spec = pandas_layer(pandas_sdk_version)
        self.powertools = self._reference("Powertools", self.powertools_spec)
        self.pandas = self._reference("AwsSdkForPandas", self.pandas_spec)

    def _reference(self, construct_id: str, layer: PublishedLayer) -> lambda_.ILayerVersion:
        arn = ssm.StringParameter.value_for_string_parameter(self, layer.parameter_name)
        return lambda_.LayerVersion.from_layer_version_arn(self, construct_id, arn)
