"""Every message, record and manifest of edgeloop: the one source of truth.

JSON Schema copies live in schemas/json/ (regenerate with `make schemas`).
"""

from .context import ActiveContext, ContextInterval, ContextKind, SpecLimits, SubInterval
from .deployment import DeploymentRecord, DeploymentState, ExcludedDevice, RolloutWave
from .device import DeviceAnnouncement, DeviceRecord, DeviceStatus, ModelStatusReport
from .envelope import IotRuleEvent
from .model import (
    Architecture,
    CompatibilityTier,
    ModelFamily,
    ModelManifest,
    ModelMetrics,
    ModelUpdate,
    Precision,
    feature_schema_hash,
)
from .quarantine import QuarantineReason, QuarantineRecord
from .telemetry import ColumnarSamples, TelemetryBatch, decode_batch, encode_batch
from .training import LabelSource, TrainingExample, ViolationClass
from .use_case import MetricRole, UseCaseConfig, load_use_case

# The contracts exported as JSON Schema, by file name.
EXPORTED_MODELS = {
    "telemetry_batch": TelemetryBatch,
    "iot_rule_event": IotRuleEvent,
    "quarantine_record": QuarantineRecord,
    "context_interval": ContextInterval,
    "sub_interval": SubInterval,
    "training_example": TrainingExample,
    "model_manifest": ModelManifest,
    "model_update": ModelUpdate,
    "device_announcement": DeviceAnnouncement,
    "model_status_report": ModelStatusReport,
    "device_record": DeviceRecord,
    "deployment_record": DeploymentRecord,
    "use_case_config": UseCaseConfig,
}

__all__ = [
    "ActiveContext",
    "Architecture",
    "ColumnarSamples",
    "CompatibilityTier",
    "ContextInterval",
    "ContextKind",
    "DeploymentRecord",
    "DeploymentState",
    "DeviceAnnouncement",
    "DeviceRecord",
    "DeviceStatus",
    "EXPORTED_MODELS",
    "ExcludedDevice",
    "IotRuleEvent",
    "LabelSource",
    "MetricRole",
    "ModelFamily",
    "ModelManifest",
    "ModelMetrics",
    "ModelStatusReport",
    "ModelUpdate",
    "Precision",
    "QuarantineReason",
    "QuarantineRecord",
    "RolloutWave",
    "SpecLimits",
    "SubInterval",
    "TelemetryBatch",
    "TrainingExample",
    "UseCaseConfig",
    "ViolationClass",
    "decode_batch",
    "encode_batch",
    "feature_schema_hash",
    "load_use_case",
]
