"""Every message, record and manifest of edgeloop: the one source of truth.

JSON Schema copies live in schemas/json/ (regenerate with `make schemas`).

Names are imported from their module on first use (PEP 562): building pydantic models costs
import time, and the ingest function, on every cold start, needs only a few of them.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module (of this package) that defines it
_EXPORTS = {
    **dict.fromkeys(("ActiveContext", "ContextInterval", "ContextKind", "SpecLimits", "SubInterval"), "context"),
    **dict.fromkeys(
        ("DeploymentRecord", "DeploymentState", "ExcludedDevice", "RolloutPolicy", "RolloutWave"), "deployment"
    ),
    **dict.fromkeys(
        (
            "DeviceAnnouncement",
            "DeviceEvent",
            "DeviceHistoryEntry",
            "DeviceIdentity",
            "DeviceProfile",
            "DeviceRecord",
            "DeviceStatus",
            "ModelStatusReport",
            "PeriodicStatus",
        ),
        "device",
    ),
    **dict.fromkeys(("DeviceConnection", "LifecycleEvent"), "presence"),
    "IotRuleEvent": "envelope",
    **dict.fromkeys(
        (
            "Architecture",
            "CompatibilityTier",
            "ModelFamily",
            "ModelManifest",
            "ModelMetrics",
            "ModelTemplate",
            "ModelUpdate",
            "Precision",
            "TEMPLATE_FAMILY",
            "feature_schema_hash",
        ),
        "model",
    ),
    **dict.fromkeys(
        ("AlertEvent", "AlertEventKind", "ModelIdentity", "PredictionBatch", "PredictionMessage"), "prediction"
    ),
    **dict.fromkeys(
        ("LiveAccuracyReport", "LiveAccuracyState", "LiveAccuracyWindow", "ModelDegradedDetail"), "monitoring"
    ),
    **dict.fromkeys(("QuarantineReason", "QuarantineRecord"), "quarantine"),
    **dict.fromkeys(("ColumnarSamples", "TelemetryBatch"), "telemetry"),
    **dict.fromkeys(("decode_batch", "encode_batch"), "telemetry_codec"),
    **dict.fromkeys(("LabelSource", "TrainingExample", "ViolationClass"), "training"),
    **dict.fromkeys(
        (
            "LabelingConfig",
            "MetricRole",
            "ParameterRange",
            "TrainingConfig",
            "UseCaseConfig",
            "UseCaseError",
            "ValidationConfig",
            "load_use_case",
            "load_use_case_file",
            "resolve_use_case",
        ),
        "use_case",
    ),
}

# The contracts exported as JSON Schema: file name -> model name.
_EXPORTED = {
    "telemetry_batch": "TelemetryBatch",
    "iot_rule_event": "IotRuleEvent",
    "quarantine_record": "QuarantineRecord",
    "context_interval": "ContextInterval",
    "sub_interval": "SubInterval",
    "training_example": "TrainingExample",
    "model_manifest": "ModelManifest",
    "model_update": "ModelUpdate",
    "device_announcement": "DeviceAnnouncement",
    "model_status_report": "ModelStatusReport",
    "periodic_status": "PeriodicStatus",
    "prediction_message": "PredictionMessage",
    "prediction_batch": "PredictionBatch",
    "alert_event": "AlertEvent",
    "live_accuracy_report": "LiveAccuracyReport",
    "model_degraded_detail": "ModelDegradedDetail",
    "device_record": "DeviceRecord",
    "deployment_record": "DeploymentRecord",
    "device_history_entry": "DeviceHistoryEntry",
    "use_case_config": "UseCaseConfig",
}

__all__ = sorted([*_EXPORTS, "EXPORTED_MODELS"])


def __getattr__(name: str) -> Any:
    if name == "EXPORTED_MODELS":
        value = {file: __getattr__(model) for file, model in _EXPORTED.items()}
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
