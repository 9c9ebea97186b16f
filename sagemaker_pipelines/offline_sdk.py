"""Building a definition with the SageMaker SDK offline: no network, nothing written to ~, no chatter.

The SDK reads its defaults config, creates boto3 clients at import and validates its config ~90 times
per definition; these context managers keep all of that local, quiet and quick.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeloop.cloud.settings import temporary_environment

_SDK_CONFIG = """\
SchemaVersion: '1.0'
SageMaker:
  PythonSDK:
    Modules:
      TelemetryOptOut: true
"""


@contextmanager
def offline_sagemaker(region: str) -> Iterator[None]:
    """Environment under which the SageMaker SDK builds definitions without touching the network or ~.

    The SDK reads its defaults config (which carries the telemetry opt-out) from the files these
    variables name; a temp dir keeps it out of the user's home. The previous environment comes back
    afterwards, so a caller's own SageMaker setup is left as it was.
    """
    with tempfile.TemporaryDirectory(prefix="edgeloop-sagemaker-") as config_dir:
        config_file = Path(config_dir) / "config.yaml"
        config_file.write_text(_SDK_CONFIG)
        overrides = {
            "AWS_DEFAULT_REGION": region,
            "SAGEMAKER_VALIDATE_ROLE": "false",
            # Importing sagemaker.mlops creates a boto3 client at module level; without credentials
            # in the environment botocore would ask the EC2 metadata service for them.
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config_file),
            "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config_file),
        }
        with temporary_environment(overrides):
            yield


@contextmanager
def quiet_sdk() -> Iterator[None]:
    """Silence the SDK's chatter about this build (config file found, no job started, job names
    dropped from the definition): expected here, and noise on a CLI's stderr."""
    import logging
    import warnings

    import sagemaker.mlops.workflow.pipeline  # noqa: F401  (the import sets up the SDK's loggers)

    sdk_logger = logging.getLogger("sagemaker")
    loggers = [
        sdk_logger,
        *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict) if n.startswith("sagemaker.")),
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), _schema_checked_once():
            warnings.filterwarnings("ignore", message="Running within a PipelineSession")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def _schema_checked_once() -> Iterator[None]:
    """`jsonschema.validate` with the schema itself checked once, not on every call.

    The SDK validates its defaults config (our telemetry opt-out) ~90 times per definition, and each
    `jsonschema.validate` call first re-checks the SDK's large config schema against the meta-schema:
    40 s of a build on a busy 2-core machine. Instances are still validated on every call, with the
    same validator class and the same best-match error as `jsonschema.validate`.
    """
    import jsonschema
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    original = jsonschema.validate
    validators: dict[int, tuple[object, object]] = {}  # id(schema) -> (schema, validator); schema kept alive

    def validate(instance, schema, cls=None, *args, **kwargs):
        if cls is not None or args or kwargs:
            return original(instance, schema, cls, *args, **kwargs)
        entry = validators.get(id(schema))
        if entry is None or entry[0] is not schema:
            validator_class = validator_for(schema)
            validator_class.check_schema(schema)
            entry = validators[id(schema)] = (schema, validator_class(schema))
        error = best_match(entry[1].iter_errors(instance))
        if error is not None:
            raise error

    jsonschema.validate = validate
    try:
        yield
    finally:
        jsonschema.validate = original
