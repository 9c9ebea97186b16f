"""Starting a use case's SageMaker Pipeline for one line: its parameters, names and running executions.

`edgeloop pipeline start` and functions/retraining both start executions; the values they send are
held here to SageMaker's own constraints (botocore's sagemaker service-2.json, StartPipelineExecution):
- PipelineExecutionDisplayName: 1-82 characters, pattern `[a-zA-Z0-9](-*[a-zA-Z0-9]){0,81}`;
- PipelineExecutionDescription: 0-3072 characters, pattern `.*` (no line breaks: `.` stops at one);
- ClientRequestToken: required, 32-128 characters; a start repeated with the same token completes once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

DISPLAY_NAME_MAX = 82
DESCRIPTION_MAX = 3072
TOKEN_MIN, TOKEN_MAX = 32, 128
LINE_ID_PARAMETER = "LineId"
EXECUTING = "Executing"
# SageMaker stops a pipeline execution after 672 hours (SageMaker quotas: "pipeline execution timeout"),
# so no execution created earlier can still be Executing: listing stops there.
EXECUTION_TIMEOUT = timedelta(hours=672)
_TOKEN_PREFIX = "edgeloop-"


def execution_parameters(
    *,
    line_id: str,
    start: date | None = None,
    end: date | None = None,
    model_version: str | None = None,
    code_version: str | None = None,
    processing_instance_type: str | None = None,
    training_instance_type: str | None = None,
    candidates_per_template: int | None = None,
) -> list[dict[str, str]]:
    """PipelineParameters for start_pipeline_execution; unset optional values keep the pipeline's defaults."""
    values: dict[str, Any] = {
        LINE_ID_PARAMETER: line_id,
        "StartDate": start.isoformat() if start else "",
        "EndDate": end.isoformat() if end else "",
        "ModelVersion": model_version,
        "CodeVersion": code_version,
        "ProcessingInstanceType": processing_instance_type,
        "TrainingInstanceType": training_instance_type,
        "CandidatesPerTemplate": candidates_per_template,
    }
    return [{"Name": name, "Value": str(value)} for name, value in values.items() if value is not None]


def _name_part(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit].strip("-")


def execution_display_name(line_id: str, at: datetime, trigger: str | None = None) -> str:
    """`<line>[-<trigger>]-YYYYMMDD-HHMMSS`: letters, digits and single hyphens, at most 82 characters."""
    stamp = f"{at.astimezone(UTC):%Y%m%d-%H%M%S}"
    label = _name_part(trigger, 16) if trigger else ""
    room = DISPLAY_NAME_MAX - len(stamp) - 1 - (len(label) + 1 if label else 0)
    line = _name_part(line_id, min(60, room)) or "line"
    return "-".join(part for part in (line, label, stamp) if part)


def execution_description(text: str) -> str:
    """One line (the pattern `.*` admits no line break), cut to SageMaker's 3072 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= DESCRIPTION_MAX else flat[: DESCRIPTION_MAX - 1] + "…"


def client_request_token(*parts: str) -> str:
    """A token that is the same for the same trigger: a SHA-256 of its parts (73 characters)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return _TOKEN_PREFIX + digest


def executing_lines(sagemaker: Any, pipeline_name: str, now: datetime) -> dict[str, str]:
    """{line id: execution ARN} of the pipeline's Executing executions, read from each one's LineId parameter.

    The display name is not used: `edgeloop pipeline start` and the console name executions freely
    (and two line ids may flatten to one name); the LineId parameter has no default, so every
    execution carries it."""
    running: dict[str, str] = {}
    for arn in _executing_arns(sagemaker, pipeline_name, now):
        line_id = _line_of(sagemaker, arn)
        if line_id is not None:
            running.setdefault(line_id, arn)
    return running


def _executing_arns(sagemaker: Any, pipeline_name: str, now: datetime) -> Iterable[str]:
    pages = sagemaker.get_paginator("list_pipeline_executions").paginate(
        PipelineName=pipeline_name,
        CreatedAfter=now - EXECUTION_TIMEOUT,
        SortBy="CreationTime",
        SortOrder="Descending",
    )
    for page in pages:
        for summary in page.get("PipelineExecutionSummaries", []):
            if summary.get("PipelineExecutionStatus") == EXECUTING:
                yield summary["PipelineExecutionArn"]


def _line_of(sagemaker: Any, execution_arn: str) -> str | None:
    pages = sagemaker.get_paginator("list_pipeline_parameters_for_execution").paginate(
        PipelineExecutionArn=execution_arn
    )
    for page in pages:
        for parameter in page.get("PipelineParameters", []):
            if parameter.get("Name") == LINE_ID_PARAMETER:
                return parameter.get("Value")
    return None
