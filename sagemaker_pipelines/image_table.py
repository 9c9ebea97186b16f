"""steps/xgboost_images.json generated from the SageMaker SDK (the `pipelines` extra).

Not in steps/: the step code archive holds steps/ and must not need the SDK.
"""

from __future__ import annotations

import json
from pathlib import Path

from .steps.images import (
    IMAGES_FILE,
    INFERENCE,
    TRAINING,
    XGBOOST_FRAMEWORK,
    XGBOOST_FRAMEWORK_VERSION,
    load_image_table,
)


def sdk_image_table() -> dict:
    """{"framework_version", "regions": {region: {"training": uri, "inference": uri}}} from the SDK.

    Imports the SageMaker SDK (the `pipelines` extra); the regions are those its XGBoost config lists."""
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework(XGBOOST_FRAMEWORK)
    regions = sorted(
        set(config[TRAINING]["versions"][XGBOOST_FRAMEWORK_VERSION]["registries"])
        | set(config[INFERENCE]["versions"][XGBOOST_FRAMEWORK_VERSION]["registries"])
    )
    table = {
        region: {
            scope: image_uris.retrieve(
                XGBOOST_FRAMEWORK, region=region, version=XGBOOST_FRAMEWORK_VERSION, image_scope=scope
            )
            for scope in (TRAINING, INFERENCE)
        }
        for region in regions
    }
    return {"framework_version": XGBOOST_FRAMEWORK_VERSION, "regions": table}


def image_table_text(table: dict) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


def write_image_table(path: Path = IMAGES_FILE) -> Path:
    """Regenerate xgboost_images.json from the installed SDK."""
    path.write_text(image_table_text(sdk_image_table()))
    load_image_table.cache_clear()
    return path
