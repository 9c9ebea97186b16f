"""The SageMaker-managed XGBoost image every step runs in, per region, as the SageMaker SDK resolves it.

The steps need no image of our own: SageMaker's XGBoost framework container runs our code in script
mode (sagemaker_pipelines/step_code.py builds the archive it runs). Its image URIs are not written by hand: they are
generated from the SDK (`sagemaker.core.image_uris.retrieve`, for every region the SDK's XGBoost
config lists; sagemaker_pipelines/image_table.py) into xgboost_images.json beside this module, which
the CDK stack, the register step and the local run read without importing the 1 GB SDK.
`edgeloop pipeline definition --write-snapshots` regenerates it, and
tests/unit/pipelines/test_step_images.py fails when it disagrees with the installed SDK.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

# The framework version: XGBoost 3.2.0, the version constraints.txt pins for xgboost-cpu (a test
# checks they agree), so a model trains in the cloud with the library the tests ran. The container's
# Python is 3.12: aws/sagemaker-xgboost-container, branch upgrade-xgboost-3.2.0-remove-mlio, commit
# a10575d "feat: upgrade to Python 3.12, remove MLIO dependency" (setup.py python_requires=">=3.12";
# test/resources/versions/train.py asserts Python 3.12 in the image). So the step code needs no
# back-port below our own requires-python (3.11).
XGBOOST_FRAMEWORK = "xgboost"
XGBOOST_FRAMEWORK_VERSION = "3.2-0"
CONTAINER_PYTHON = (3, 12)
IMAGES_FILE = Path(__file__).resolve().parent / "xgboost_images.json"
# image scopes of the SDK: the steps (processing and training jobs) and the model package's serving image
TRAINING = "training"
INFERENCE = "inference"


@cache
def load_image_table() -> dict:
    table = json.loads(IMAGES_FILE.read_text())
    if table.get("framework_version") != XGBOOST_FRAMEWORK_VERSION:
        raise ValueError(
            f"{IMAGES_FILE} is for XGBoost {table.get('framework_version')!r}, not {XGBOOST_FRAMEWORK_VERSION!r}: "
            "regenerate it with `edgeloop pipeline definition --write-snapshots`"
        )
    return table


def regions() -> list[str]:
    return sorted(load_image_table()["regions"])


def image_uri(region: str, scope: str) -> str:
    table = load_image_table()["regions"]
    if region not in table:
        raise ValueError(
            f"region={region!r}: the SageMaker SDK lists no XGBoost {XGBOOST_FRAMEWORK_VERSION} image there; "
            f"regions with one: {sorted(table)}"
        )
    return table[region][scope]


def step_image_uri(region: str) -> str:
    """The image the pipeline's processing and training jobs run in."""
    return image_uri(region, TRAINING)


def serving_image_uri(region: str) -> str:
    """The image a registered model package names: edge devices never run it; it records the model's
    framework in the registry and lets a package be served by a SageMaker endpoint for side-by-side checks."""
    return image_uri(region, INFERENCE)


def registry_account(uri: str) -> str:
    """The AWS account of an ECR image URI (<account>.dkr.ecr.<region>.<domain>/<repository>:<tag>)."""
    return uri.split(".", 1)[0]


def repository_name(uri: str) -> str:
    return uri.split("/", 1)[1].rsplit(":", 1)[0]
