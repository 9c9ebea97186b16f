"""The stack's settings, read from CDK context (cdk.json, or `cdk synth -c key=value`).

| context key                              | default    | meaning                                         |
|------------------------------------------|------------|-------------------------------------------------|
| edgeloop:useCase                         | extrusion  | packaged use case the data-path functions and   |
|                                          |            | the pipeline serve                              |
| edgeloop:useCaseFile                     | (none)     | a use-case YAML anywhere, instead: packaged     |
|                                          |            | with the functions and the pipeline (below)     |
| edgeloop:latenessSlaDays                 | 14         | ingest refuses, compaction diverts older data   |
| edgeloop:enableTimestream                | false      | build the optional Timestream hot path (below)  |
| edgeloop:timestreamMemoryRetentionHours  | 24         | hot path: memory store retention (1-8766 h)     |
| edgeloop:timestreamMagneticRetentionDays | 90         | hot path: magnetic store retention (1-73000 d)  |
| edgeloop:lineIds                         | []         | lines whose Model Package Groups CDK creates    |
| edgeloop:modelSigningKeySecretArn        | (none)     | secret with the Ed25519 PEM key the pipeline's  |
|                                          |            | register step signs model payloads with         |
| edgeloop:canaryShare                     | 0.1        | rollout: share of each tier's devices in its    |
|                                          |            | canary wave, in (0, 1]; at least one device     |
| edgeloop:failureThreshold                | 0.2        | rollout: failed share of a wave, in [0, 1],     |
|                                          |            | above which it stops and rolls back             |
| edgeloop:rolloutTimeoutSeconds           | 3600       | rollout: in progress this long -> timed out     |
| edgeloop:waveTimeoutSeconds              | 900        | rollout: a wave without a report this long      |
|                                          |            | -> timed out                                    |
| edgeloop:offlineSilenceSeconds           | 900        | a device silent this long is marked offline     |
| edgeloop:compactionIntervalMinutes       | 60         | compaction runs this often (5-1440 min): curated|
|                                          |            | data, rollups and examples lag up to this much  |

Each compaction round costs about the same per line whatever the data (the day's curated rewrite,
rollups, the packer's listing and writes), so the interval sets most of the bill per gateway that is not
storage (README "Cost at fleet scale", `make bench-cost` reads the interval from the template). Gateway
alerts do not wait for it (they are raised on the gateway); the local stack keeps its own faster schedule
(edgeloop/local/schedule.py). The compaction construct (constructs/ingestion.py) reads the key with the
same function (compaction_interval_minutes), so both see one value.

The Greengrass components have no version setting: the stack publishes both at the package version
(schemas/version.py PACKAGE_VERSION, constructs/components.py), and the orchestrator's rollouts and the base
deployment pin exactly that version, so a rollout never names a version that is not published.
The former keys edgeloop:gatewayComponentVersion and edgeloop:modelRunnerComponentVersion are
refused unless they equal the package version (an old cdk.json must not pin a version in silence).

The rollout keys (defaults: schemas.deployment.RolloutPolicy) reach the orchestrator, status intake
and the wave controller as environment variables (schemas.deployment.ROLLOUT_POLICY_ENV).

`edgeloop:useCaseFile` (a path, relative to the directory cdk runs in) is validated at synth (an invalid
file fails the synth naming the file and the field) and packaged, as JSON, at names.PACKAGED_USE_CASE_FILE
in the Lambda asset and in the pipeline's code archive; the functions and the steps get
EDGELOOP_USE_CASE_FILE naming it (and EDGELOOP_USE_CASE its use_case). The pipeline definition is then
built at synth (with the SageMaker SDK, seconds) rather than read from sagemaker_pipelines/definitions/.
With both keys, edgeloop:useCase must be the file's use_case.

`edgeloop:lineIds` is a JSON list or, from `-c`, a comma-separated string of line ids. Lines added
later need no redeploy: the pipeline's register step creates a missing group itself.

`edgeloop:modelSigningKeySecretArn` is the complete ARN (with AWS's 6-character suffix) of a Secrets
Manager secret whose SecretString is the PKCS#8 PEM private key (greengrass_components/model_runner/
signing.py `write_key_pair` writes one; the ModelRunner configuration holds its public key). The pipeline role may read exactly that secret. The secret is assumed to be
encrypted with the AWS-managed key aws/secretsmanager; with a customer-managed KMS key, that key's
policy must also allow the pipeline role kms:Decrypt. Without the key the pipeline registers unsigned
payloads, which gateways configured with a public key refuse: the synth warns, and the stack says so
in its ModelPayloadSigning output.

Timestream for LiveAnalytics is closed to new customers (2025-06-20), so S3 is the system of
record and the Timestream hot path (constructs/hot_path.py: a database, a table and the hot_path
function copying each new raw/ object into it) is off unless an account that already has
Timestream turns it on. The retention settings apply only then. The magnetic store takes late
data, so keep its retention above the lateness SLA (14 days); 90 days of hot history is plenty
when curated Parquet in S3 holds everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edgeloop.schemas import RolloutPolicy, names
from edgeloop.schemas.common import Identifier, SemVer
from edgeloop.schemas.use_case import UseCaseConfig, UseCaseError, load_use_case_file, resolve_use_case
from edgeloop.schemas.version import PACKAGE_VERSION

from .layers import PANDAS_SDK_VERSION

USE_CASE_KEY = "edgeloop:useCase"
USE_CASE_FILE_KEY = "edgeloop:useCaseFile"
LATENESS_SLA_KEY = "edgeloop:latenessSlaDays"
ENABLE_TIMESTREAM_KEY = "edgeloop:enableTimestream"
TIMESTREAM_MEMORY_RETENTION_KEY = "edgeloop:timestreamMemoryRetentionHours"
TIMESTREAM_MAGNETIC_RETENTION_KEY = "edgeloop:timestreamMagneticRetentionDays"
# Removed: the components' version is the package version (see the module docstring).
GATEWAY_VERSION_KEY = "edgeloop:gatewayComponentVersion"
MODEL_RUNNER_VERSION_KEY = "edgeloop:modelRunnerComponentVersion"
REMOVED_VERSION_KEYS = (GATEWAY_VERSION_KEY, MODEL_RUNNER_VERSION_KEY)
PANDAS_LAYER_VERSION_KEY = "edgeloop:pandasLayerVersion"
LINE_IDS_KEY = "edgeloop:lineIds"
MODEL_SIGNING_KEY_SECRET_ARN_KEY = "edgeloop:modelSigningKeySecretArn"
# RolloutPolicy field -> the context key that sets it
ROLLOUT_POLICY_KEYS = {
    "canary_share": "edgeloop:canaryShare",
    "failure_threshold": "edgeloop:failureThreshold",
    "rollout_timeout_s": "edgeloop:rolloutTimeoutSeconds",
    "wave_timeout_s": "edgeloop:waveTimeoutSeconds",
    "offline_silence_s": "edgeloop:offlineSilenceSeconds",
}

DEFAULT_TIMESTREAM_MEMORY_RETENTION_HOURS = 24
DEFAULT_TIMESTREAM_MAGNETIC_RETENTION_DAYS = 90
MAX_TIMESTREAM_MEMORY_RETENTION_HOURS = 8766  # the limits of AWS::Timestream::Table RetentionProperties
MAX_TIMESTREAM_MAGNETIC_RETENTION_DAYS = 73000
# A Model Package Group name is at most 63 characters (^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$).
MAX_MODEL_PACKAGE_GROUP_NAME = 63
MAX_LATENESS_SLA_DAYS = 365  # raw/ expires after 30 days, but a gateway may replay a long outage
COMPACTION_INTERVAL_KEY = "edgeloop:compactionIntervalMinutes"
DEFAULT_COMPACTION_INTERVAL_MINUTES = 60
# Below 5 minutes a round's fixed cost per line dominates the bill; a day is EventBridge's natural upper
# end and keeps the daily full sweep of raw/ (functions/compaction/checkpoint.py) at least daily.
MIN_COMPACTION_INTERVAL_MINUTES = 5
MAX_COMPACTION_INTERVAL_MINUTES = 1440

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class ConfigError(ValueError):
    """A context value the stack cannot be built from (names the key and the value)."""


@dataclass(frozen=True)
class StackConfig:
    use_case: str = names.DEFAULT_USE_CASE
    lateness_sla_days: int = names.DEFAULT_LATENESS_SLA_DAYS
    component_version: str = PACKAGE_VERSION  # both Greengrass components, published by the stack
    enable_timestream: bool = False
    timestream_memory_retention_hours: int = DEFAULT_TIMESTREAM_MEMORY_RETENTION_HOURS
    timestream_magnetic_retention_days: int = DEFAULT_TIMESTREAM_MAGNETIC_RETENTION_DAYS
    line_ids: tuple[str, ...] = ()
    model_signing_key_secret_arn: str = ""  # empty: the pipeline registers unsigned payloads
    rollout_policy: RolloutPolicy = RolloutPolicy()
    compaction_interval_minutes: int = DEFAULT_COMPACTION_INTERVAL_MINUTES
    use_case_file: str = ""  # edgeloop:useCaseFile, absolute; empty: the packaged use case `use_case`

    @property
    def packaged_use_case(self) -> UseCaseConfig | None:
        """The use case of edgeloop:useCaseFile, which the stack packages with the code; None without one."""
        return load_use_case_file(self.use_case_file, USE_CASE_FILE_KEY) if self.use_case_file else None

    @classmethod
    def from_context(cls, get: Any) -> StackConfig:
        """`get` is `node.try_get_context`: context arrives as JSON values or, from -c, as strings."""
        _refuse_removed_keys(get)
        use_case, use_case_file = use_case_from_context(get)
        return cls(
            use_case=use_case,
            use_case_file=use_case_file,
            lateness_sla_days=_int_within(
                get(LATENESS_SLA_KEY),
                LATENESS_SLA_KEY,
                default=names.DEFAULT_LATENESS_SLA_DAYS,
                maximum=MAX_LATENESS_SLA_DAYS,
            ),
            component_version=component_version(get),
            enable_timestream=_flag(get(ENABLE_TIMESTREAM_KEY), ENABLE_TIMESTREAM_KEY),
            timestream_memory_retention_hours=_int_within(
                get(TIMESTREAM_MEMORY_RETENTION_KEY),
                TIMESTREAM_MEMORY_RETENTION_KEY,
                default=DEFAULT_TIMESTREAM_MEMORY_RETENTION_HOURS,
                maximum=MAX_TIMESTREAM_MEMORY_RETENTION_HOURS,
            ),
            timestream_magnetic_retention_days=_int_within(
                get(TIMESTREAM_MAGNETIC_RETENTION_KEY),
                TIMESTREAM_MAGNETIC_RETENTION_KEY,
                default=DEFAULT_TIMESTREAM_MAGNETIC_RETENTION_DAYS,
                maximum=MAX_TIMESTREAM_MAGNETIC_RETENTION_DAYS,
            ),
            line_ids=_line_ids(get(LINE_IDS_KEY), use_case),
            model_signing_key_secret_arn=model_signing_key_secret_arn(get),
            rollout_policy=rollout_policy(get),
            compaction_interval_minutes=compaction_interval_minutes(get),
        )

    @property
    def gateway_component_version(self) -> str:
        return self.component_version

    @property
    def model_runner_component_version(self) -> str:
        return self.component_version


def use_case_from_context(get: Any) -> tuple[str, str]:
    """(use case name, absolute use-case file or ""), validated: edgeloop:useCaseFile (its use_case must
    equal edgeloop:useCase if that is set too), else edgeloop:useCase (default names.DEFAULT_USE_CASE)."""
    name, file = get(USE_CASE_KEY) or None, get(USE_CASE_FILE_KEY) or None
    if file is None:
        name = _validated(Identifier, name or names.DEFAULT_USE_CASE, USE_CASE_KEY)
    elif not isinstance(file, str):
        raise ConfigError(f"{USE_CASE_FILE_KEY}={file!r} is not a path")
    try:
        config = resolve_use_case(
            None if name is None else str(name),
            file,
            environ={},
            name_source=USE_CASE_KEY,
            file_source=USE_CASE_FILE_KEY,
        )
    except UseCaseError as exc:
        raise ConfigError(str(exc)) from None
    return config.use_case, str(Path(file).expanduser().resolve()) if file else ""


def component_version(get: Any) -> str:
    """The package version; a removed version key may only repeat it."""
    for key in REMOVED_VERSION_KEYS:
        value = get(key)
        if value not in (None, "") and _validated(SemVer, value, key) != PACKAGE_VERSION:
            raise ConfigError(
                f"{key}={value!r}: component versions are no longer set in context; the stack publishes both "
                f"components at the package version {PACKAGE_VERSION} and rollouts deploy that version "
                "(remove the key from cdk.json / -c)"
            )
    return PACKAGE_VERSION


def compaction_interval_minutes(get: Any) -> int:
    """edgeloop:compactionIntervalMinutes from context (DEFAULT_COMPACTION_INTERVAL_MINUTES when not set)."""
    return _int_within(
        get(COMPACTION_INTERVAL_KEY),
        COMPACTION_INTERVAL_KEY,
        default=DEFAULT_COMPACTION_INTERVAL_MINUTES,
        minimum=MIN_COMPACTION_INTERVAL_MINUTES,
        maximum=MAX_COMPACTION_INTERVAL_MINUTES,
    )


def rollout_policy(get: Any) -> RolloutPolicy:
    """The rollout policy from its context keys (ROLLOUT_POLICY_KEYS); a key not set keeps its default."""
    values = {field: get(key) for field, key in ROLLOUT_POLICY_KEYS.items() if get(key) not in (None, "")}
    try:
        return RolloutPolicy.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ROLLOUT_POLICY_KEYS[str(error["loc"][0])]
        raise ConfigError(f"{key}={values[str(error['loc'][0])]!r}: {error['msg']}") from exc


def model_signing_key_secret_arn(get: Any) -> str:
    """edgeloop:modelSigningKeySecretArn from context: a complete secret ARN, or "" when not set."""
    return checked_signing_key_secret_arn(get(MODEL_SIGNING_KEY_SECRET_ARN_KEY))


def checked_signing_key_secret_arn(value: Any) -> str:
    # the definition builder's pattern: what CDK accepts, the register step reads
    from edgeloop.sagemaker_pipelines.steps.signing_key import SECRET_ARN_PATTERN

    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not SECRET_ARN_PATTERN.match(value.strip()):
        raise ConfigError(
            f"{MODEL_SIGNING_KEY_SECRET_ARN_KEY}={value!r} is not a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>-<suffix>, the complete ARN)"
        )
    return value.strip()


def _flag(value: Any, key: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{key}={value!r} is not a boolean (true/false)")


def _validated(annotation: Any, value: Any, key: str) -> str:
    try:
        return TypeAdapter(annotation).validate_python(str(value))
    except ValidationError as exc:
        raise ConfigError(f"{key}={value!r}: {exc.errors()[0]['msg']}") from exc


def _refuse_removed_keys(get: Any) -> None:
    """A key that no longer does anything fails loudly rather than being ignored."""
    value = get(PANDAS_LAYER_VERSION_KEY)
    if value is not None:
        raise ConfigError(
            f"{PANDAS_LAYER_VERSION_KEY}={value!r} is no longer read: the layer ARN comes from AWS's public SSM "
            f"parameter for AWS SDK for pandas {PANDAS_SDK_VERSION} in the stack's region (cdk/constructs/layers.py)"
        )


def _int_within(value: Any, key: str, *, default: int, maximum: int, minimum: int = 1) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):  # JSON true would otherwise read as 1
        raise ConfigError(f"{key}={value!r} is not a whole number")
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigError(f"{key}={value!r} is not a whole number") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{key}={value!r} must be between {minimum} and {maximum}")
    return number


def _line_ids(value: Any, use_case: str) -> tuple[str, ...]:
    """A JSON list or a comma-separated string of distinct line ids whose group names fit."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items: list[Any] = [item.strip() for item in value.split(",")]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ConfigError(f"{LINE_IDS_KEY}={value!r} is not a list or a comma-separated string of line ids")
    line_ids: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{LINE_IDS_KEY}={value!r}: line id {item!r} is not a string")
        try:
            line_id = TypeAdapter(Identifier).validate_python(item)
        except ValidationError as exc:
            raise ConfigError(f"{LINE_IDS_KEY}={value!r}: line id {item!r}: {exc.errors()[0]['msg']}") from exc
        if line_id in line_ids:
            raise ConfigError(f"{LINE_IDS_KEY}={value!r}: line id {line_id!r} is listed twice")
        group = names.model_package_group_name(use_case, line_id)
        if len(group) > MAX_MODEL_PACKAGE_GROUP_NAME:
            raise ConfigError(
                f"{LINE_IDS_KEY}={value!r}: model package group {group!r} of line {line_id!r} is longer than "
                f"{MAX_MODEL_PACKAGE_GROUP_NAME} characters"
            )
        line_ids.append(line_id)
    return tuple(line_ids)
