"""CDK entry point: `python -m edgeloop.cdk.app` (what cdk.json runs).

Stages the Lambda code (no Docker), builds EdgeloopStack from the context in cdk.json, and runs
the AWS Solutions checks of cdk-nag on it: an unacknowledged finding fails the synth.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from .constructs.config import StackConfig
from .lambda_asset import stage_lambda_asset
from .stack import EdgeloopStack

STACK_NAME = "Edgeloop"
STAGING_DIR_ENV = "EDGELOOP_CDK_STAGING_DIR"
# Feature flags set here rather than in cdk.json, so an in-process synth (the tests) builds the
# same template as `cdk synth`. Server access logs are delivered under a bucket policy instead of
# the legacy LogDelivery ACL, which BUCKET_OWNER_ENFORCED ownership forbids.
FEATURE_FLAGS = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}


def build_app(
    *,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    staging_dir: Path | None = None,
) -> tuple[cdk.App, EdgeloopStack]:
    """The app and its one stack, with cdk-nag registered (checks run when the app synthesizes)."""
    app = cdk.App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context)
    asset = stage_lambda_asset(staging_dir or default_staging_dir(), use_case=config.packaged_use_case)
    stack = EdgeloopStack(app, STACK_NAME, config=config, lambda_asset=asset)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack


def default_staging_dir() -> Path:
    """Outside the repository, so the asset never stages a copy of itself."""
    configured = os.environ.get(STAGING_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "edgeloop-cdk-staging"


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
