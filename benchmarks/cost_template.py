"""What the deployed stack configures that the bill depends on, read from the synthesized template:
each function's memory and architecture, the data bucket's lifecycle expirations per prefix, the log
groups' retention and compaction's schedule. The template is cdk.out/Edgeloop.template.json (`make
synth`) when it is newer than every file under cdk/ and no context is given, else the stack is
synthesized in this process (about 30 s) with that context (e.g. another edgeloop:compactionIntervalMinutes)."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeloop.schemas import names

TEMPLATE = Path(__file__).resolve().parent.parent / "cdk.out" / "Edgeloop.template.json"
DATA_BUCKET_ID = "StorageDataBucket"  # the logical id's prefix CDK gives cdk/constructs/storage.py's data bucket
ACCESS_LOGS_BUCKET_ID = "StorageAccessLogsBucket"


@dataclass(frozen=True)
class DeployedSettings:
    memory_mb: dict[str, int]  # function key (names.FUNCTIONS) -> MemorySize
    architectures: dict[str, str]
    logging_env: dict[str, dict[str, str]]  # function key -> its POWERTOOLS_LOG* variables (level, sampling)
    # the SQS event source mapping in front of a function: key -> (batch size, batching window s)
    queue_batching: dict[str, tuple[int, int]]
    expiry_days: dict[str, int]  # data bucket top-level prefix -> lifecycle expiration
    access_log_expiry_days: int
    log_retention_days: int
    compaction_interval_s: int  # compaction's EventBridge schedule, rate(...)
    path: Path
    live_accuracy_interval_s: int | None = None  # live accuracy's schedule (None: the stack has no such function)
    landing_delay_minutes: float = 0.0  # live accuracy's names.LANDING_DELAY_MINUTES_ENV


CDK_SOURCES = TEMPLATE.parent.parent / "cdk"
LOGGING_VARIABLES = "POWERTOOLS_LOG"  # powertools' Logger settings: POWERTOOLS_LOG_LEVEL, POWERTOOLS_LOGGER_*
RATE_EXPRESSION = re.compile(r"rate\((\d+) (minute|hour|day)s?\)")
RATE_UNIT_S = {"minute": 60, "hour": 3600, "day": 86_400}


def _resources(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `make synth` (or pass no path to synthesize here)")
    return json.loads(path.read_text())["Resources"]


def current_template(context: Mapping[str, object] | None = None) -> tuple[dict, Path]:
    """The synthesized template's resources, from cdk.out if it is up to date and no `context` is
    given, else synthesized now with `context` (CDK context keys, cdk/constructs/config.py)."""
    newest_source = max(p.stat().st_mtime for p in CDK_SOURCES.rglob("*.py"))
    if not context and TEMPLATE.is_file() and TEMPLATE.stat().st_mtime >= newest_source:
        return _resources(TEMPLATE), TEMPLATE
    from aws_cdk.assertions import Template  # noqa: PLC0415 (jsii starts only when needed)

    from edgeloop.cdk.app import build_app  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="edgeloop-cost-synth-") as outdir:
        _, stack = build_app(context=context, outdir=outdir)
        return Template.from_stack(stack).to_json()["Resources"], Path(f"<synthesized in process, context {context}>")


def deployed_settings(path: Path | None = None, context: Mapping[str, object] | None = None) -> DeployedSettings:
    """From the template at `path`, or from the current template (see current_template)."""
    resources, path = (_resources(path), path) if path is not None else current_template(context)
    memory, architectures, logging_env, retention, keys, variables_of = {}, {}, {}, set(), {}, {}
    for logical_id, resource in resources.items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::Function":
            variables = properties.get("Environment", {}).get("Variables", {})
            key = variables.get("POWERTOOLS_SERVICE_NAME")
            if key in names.FUNCTIONS:
                keys[logical_id] = key
                variables_of[key] = variables
                memory[key] = int(properties["MemorySize"])
                architectures[key] = properties.get("Architectures", ["x86_64"])[0]
                logging_env[key] = {
                    k: v for k, v in variables.items() if k.startswith(LOGGING_VARIABLES) and isinstance(v, str)
                }
        elif resource["Type"] == "AWS::Logs::LogGroup" and "Function" not in logical_id and "Api" not in logical_id:
            retention.add(int(properties.get("RetentionInDays", 0)))
    live_accuracy = "live_accuracy" in memory
    if len(retention) != 1:
        raise ValueError(f"{path}: the function log groups' RetentionInDays differ or are missing: {sorted(retention)}")
    return DeployedSettings(
        memory_mb=memory,
        architectures=architectures,
        logging_env=logging_env,
        queue_batching=_queue_batching(resources, keys),
        expiry_days=_expiry_by_prefix(resources, DATA_BUCKET_ID, path),
        access_log_expiry_days=_expiry_by_prefix(resources, ACCESS_LOGS_BUCKET_ID, path)[""],
        log_retention_days=retention.pop(),
        compaction_interval_s=scheduled_every_s(resources, keys, "compaction", path),
        path=path,
        live_accuracy_interval_s=scheduled_every_s(resources, keys, "live_accuracy", path) if live_accuracy else None,
        landing_delay_minutes=float(variables_of["live_accuracy"][names.LANDING_DELAY_MINUTES_ENV])
        if live_accuracy
        else 0.0,
    )


def scheduled_every_s(resources: dict, keys: dict[str, str], function: str, path: Path) -> int:
    """Seconds between the scheduled invocations of `function` (an AWS::Events::Rule with a rate)."""
    rates = []
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource["Type"] != "AWS::Events::Rule" or "ScheduleExpression" not in properties:
            continue
        arns = [target.get("Arn") for target in properties.get("Targets", [])]
        if any(isinstance(arn, dict) and keys.get(arn.get("Fn::GetAtt", [""])[0]) == function for arn in arns):
            rates.append(properties["ScheduleExpression"])
    if len(rates) != 1:
        raise ValueError(f"{path}: expected one scheduled AWS::Events::Rule targeting {function}, got {rates}")
    match = RATE_EXPRESSION.fullmatch(rates[0])
    if match is None:
        raise ValueError(f"{path}: {function}'s ScheduleExpression {rates[0]!r} is not rate(<n> <unit>)")
    return int(match.group(1)) * RATE_UNIT_S[match.group(2)]


def _queue_batching(resources: dict, keys: dict[str, str]) -> dict[str, tuple[int, int]]:
    batching = {}
    for resource in resources.values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Lambda::EventSourceMapping" and "BatchSize" in properties:
            function = properties.get("FunctionName", {})
            key = keys.get(function.get("Ref", "") if isinstance(function, dict) else "")
            if key:
                batching[key] = (int(properties["BatchSize"]), int(properties.get("MaximumBatchingWindowInSeconds", 0)))
    return batching


def _expiry_by_prefix(resources: dict, id_prefix: str, path: Path) -> dict[str, int]:
    buckets = [r for i, r in resources.items() if i.startswith(id_prefix) and r["Type"] == "AWS::S3::Bucket"]
    if len(buckets) != 1:
        raise ValueError(
            f"{path}: expected one AWS::S3::Bucket whose logical id starts {id_prefix!r}, got {len(buckets)}"
        )
    rules = buckets[0]["Properties"].get("LifecycleConfiguration", {}).get("Rules", [])
    return {
        rule.get("Prefix", "").rstrip("/"): int(rule["ExpirationInDays"])
        for rule in rules
        if rule.get("Status") == "Enabled" and "ExpirationInDays" in rule
    }
