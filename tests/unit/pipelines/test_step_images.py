"""SageMaker's XGBoost image the steps run in (sagemaker_pipelines/steps/images.py): the committed
table is what the installed SageMaker SDK says, for every region it lists, and its framework is the
XGBoost the tests run (constraints.txt)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeloop.sagemaker_pipelines import image_table
from edgeloop.sagemaker_pipelines.steps import images

CONSTRAINTS = Path(__file__).resolve().parents[3] / "constraints.txt"


def test_the_committed_table_is_what_the_sdk_resolves_for_every_region_it_lists():
    pytest.importorskip("sagemaker.core.image_uris")
    assert images.load_image_table() == image_table.sdk_image_table(), (
        "steps/xgboost_images.json disagrees with the installed SageMaker SDK: regenerate it with "
        "`edgeloop pipeline definition --write-snapshots`"
    )
    assert images.IMAGES_FILE.read_text() == image_table.image_table_text(image_table.sdk_image_table())


def test_the_framework_version_is_the_xgboost_the_tests_run():
    (pinned,) = re.findall(r"^xgboost-cpu==(\S+)$", CONSTRAINTS.read_text(), flags=re.MULTILINE)
    major, minor, _ = pinned.split(".")
    assert images.XGBOOST_FRAMEWORK_VERSION.split("-")[0] == f"{major}.{minor}"


def test_the_containers_python_runs_our_code():
    """Python 3.12 in the 3.2-0 image (see images.py for the source): at least our requires-python."""
    requires = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (CONSTRAINTS.parent / "pyproject.toml").read_text())
    assert images.CONTAINER_PYTHON >= (int(requires[1]), int(requires[2]))


def test_regions_image_and_registry():
    assert len(images.regions()) >= 30 and {"il-central-1", "ca-west-1", "ap-southeast-4"} <= set(images.regions())
    uri = images.step_image_uri("cn-north-1")
    assert uri.endswith(".amazonaws.com.cn/sagemaker-xgboost:3.2-0")
    assert images.registry_account(uri).isdigit() and images.repository_name(uri) == "sagemaker-xgboost"
    with pytest.raises(ValueError, match=r"region='xx-nowhere-1'.*regions with one"):
        images.step_image_uri("xx-nowhere-1")
