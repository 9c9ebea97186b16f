"""The sagemaker-xgboost serving image a registered model package names, per region."""

from __future__ import annotations

# The sagemaker-xgboost serving image, as `sagemaker.image_uris.retrieve("xgboost", region,
# version=XGBOOST_IMAGE_VERSION)` returns it (the SDK is not a dependency here). Edge devices never
# run this container: it documents the model's framework in the registry and lets a package be
# deployed to a SageMaker endpoint for side-by-side checks. Accounts per region from the SDK's
# image_uri_config/xgboost.json.
XGBOOST_IMAGE_VERSION = "1.7-1"
XGBOOST_IMAGE_URI = "{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:{version}"
XGBOOST_IMAGE_ACCOUNTS = {
    "af-south-1": "510948584623",
    "ap-east-1": "651117190479",
    "ap-northeast-1": "354813040037",
    "ap-northeast-2": "366743142698",
    "ap-northeast-3": "867004704886",
    "ap-south-1": "720646828776",
    "ap-southeast-1": "121021644041",
    "ap-southeast-2": "783357654285",
    "ca-central-1": "341280168497",
    "eu-central-1": "492215442770",
    "eu-north-1": "662702820516",
    "eu-south-1": "978288397137",
    "eu-west-1": "141502667606",
    "eu-west-2": "764974769150",
    "eu-west-3": "659782779980",
    "me-south-1": "801668240914",
    "sa-east-1": "737474898029",
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-1": "746614075791",
    "us-west-2": "246618743249",
}


def xgboost_image_uri(region: str) -> str:
    if region not in XGBOOST_IMAGE_ACCOUNTS:
        known = sorted(XGBOOST_IMAGE_ACCOUNTS)
        raise ValueError(f"region={region!r} has no known sagemaker-xgboost image; known: {known}")
    account = XGBOOST_IMAGE_ACCOUNTS[region]
    return XGBOOST_IMAGE_URI.format(account=account, region=region, version=XGBOOST_IMAGE_VERSION)
