"""Public Lambda layers that carry the functions' third-party dependencies (no Docker bundling).

Both layers are published by AWS in every commercial region under fixed accounts; their ARNs are
built from the stack's region token, so one synthesized template deploys anywhere. Raising
PYTHON_RUNTIME means raising the layer names below together (they are per Python version).
"""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

# Python 3.12 on Graviton: the two layer builds below exist for exactly this pair.
PYTHON_RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
_LAYER_PYTHON = "python312"

POWERTOOLS_LAYER_ACCOUNT = "017000801446"
# Powertools for AWS Lambda (Python) v3 (includes pydantic 2); layer version 27 is the same number
# in every commercial region (docs.powertools.aws.dev/lambda/python/latest, "Lambda Layer").
POWERTOOLS_LAYER_VERSION = 27

PANDAS_LAYER_ACCOUNT = "336392948345"
# AWS SDK for pandas 3.16.1 (pandas, numpy, pyarrow), AWSSDKPandas-Python312-Arm64. Unlike
# Powertools, its layer version numbers differ between regions (aws-sdk-pandas.readthedocs.io,
# "AWS Lambda Managed Layers"): check the table for your region and override with the context
# key edgeloop:pandasLayerVersion if it differs.
PANDAS_LAYER_VERSION = 26


def powertools_layer_arn() -> str:
    arch = ARCHITECTURE.name  # "arm64" | "x86_64"
    return (
        f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{POWERTOOLS_LAYER_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-{_LAYER_PYTHON}-{arch}:{POWERTOOLS_LAYER_VERSION}"
    )


def pandas_layer_arn(version: int = PANDAS_LAYER_VERSION) -> str:
    arch = "-Arm64" if ARCHITECTURE.name == "arm64" else ""
    return (
        f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{PANDAS_LAYER_ACCOUNT}:layer:"
        f"AWSSDKPandas-{_LAYER_PYTHON.capitalize()}{arch}:{version}"
    )


class PublicLayers(Construct):
    """The two layer references, created once per stack and shared by the functions."""

    def __init__(self, scope: Construct, construct_id: str, *, pandas_layer_version: int = PANDAS_LAYER_VERSION):
        super().__init__(scope, construct_id)
        self.powertools = lambda_.LayerVersion.from_layer_version_arn(self, "Powertools", powertools_layer_arn())
        self.pandas = lambda_.LayerVersion.from_layer_version_arn(
            self, "AwsSdkForPandas", pandas_layer_arn(pandas_layer_version)
        )
