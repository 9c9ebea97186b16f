"""What a trained model is, what a device needs to run it, and how an update reaches it."""

from __future__ import annotations

import platform
from typing import Annotated

from pydantic import Field, model_validator

from .common import Contract, Identifier, S3ObjectUri, SemVer, Sha256Hex, UtcDatetime
from .compat import StrEnum
from .decision import MARGIN_LIMIT
from .signed_model import SignedIdentity, SignedRollback

MODEL_FORMAT_VERSION = 1

# base64 of a 64-byte Ed25519 signature over a payload's SHA-256 digest (model_runtime/signing.py)
Ed25519SignatureB64 = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{86}==$")]


# The one list of gateway architectures. A new member needs its names in MACHINE_NAMES and
# GREENGRASS_PLATFORMS below, a manifest in each recipe and regenerated JSON schemas
# (tests/unit/fleet/test_fleet_architectures.py fails until the recipes and the export tiers agree).
class Architecture(StrEnum):
    X86_64 = "x86_64"
    AARCH64 = "aarch64"
    ARMV7L = "armv7l"


# What platform.machine() says on each architecture (lower-cased): how a gateway names its own.
MACHINE_NAMES: dict[Architecture, tuple[str, ...]] = {
    Architecture.X86_64: ("x86_64", "amd64"),
    Architecture.AARCH64: ("aarch64", "arm64"),
    Architecture.ARMV7L: ("armv7l",),
}
# The Greengrass nucleus's name of each (a recipe manifest's Platform.architecture).
GREENGRASS_PLATFORMS: dict[Architecture, str] = {
    Architecture.X86_64: "amd64",
    Architecture.AARCH64: "aarch64",
    Architecture.ARMV7L: "arm",
}


def architecture_of_machine(machine: str | None = None) -> Architecture:
    """The Architecture of a machine name (default: this machine's, platform.machine())."""
    machine = (machine if machine is not None else platform.machine()).lower()
    for architecture, machine_names in MACHINE_NAMES.items():
        if machine in machine_names:
            return architecture
    known = sorted(name for machine_names in MACHINE_NAMES.values() for name in machine_names)
    raise ValueError(f"machine architecture {machine!r} is not one of {known}")


# Listed most precise first: the order of compatibility.PRECISION_ORDER.
class Precision(StrEnum):
    FP32 = "fp32"  # bit-exact with the training library
    FP16_LEAVES = "fp16-leaves"
    QUANTIZED = "quantized"


class ModelFamily(StrEnum):
    """The payload format family: what the device's scorer evaluates."""

    XGBOOST = "xgboost"  # tree ensembles (boosted or bagged)
    LINEAR = "linear"


class LabelMode(StrEnum):
    """What the model learns: the future level itself, or its change from the current value (use case label.mode)."""

    LEVEL = "level"
    CHANGE = "change"


class ModelTemplate(StrEnum):
    """A trainable model kind with its hyper-parameter ranges, by tag; listed from simplest to costliest."""

    LASSO = "lasso"  # L1-regularized linear model on standardized features -> the linear format
    RANDOM_FOREST = "random_forest"  # bagged trees (XGBoost's random-forest mode) -> the tree format
    XGBOOST = "xgboost"  # gradient-boosted trees -> the tree format


TEMPLATE_FAMILY = {
    ModelTemplate.LASSO: ModelFamily.LINEAR,
    ModelTemplate.RANDOM_FOREST: ModelFamily.XGBOOST,
    ModelTemplate.XGBOOST: ModelFamily.XGBOOST,
}


class CompatibilityTier(Contract):
    """One payload of a model version and the devices that can run it."""

    precision: Precision
    architectures: list[Architecture] = Field(min_length=1)
    min_runtime_version: SemVer
    payload_key: str = Field(description="S3 key of the payload in the model bucket")
    payload_bytes: int = Field(gt=0)
    sha256: Sha256Hex
    max_abs_error: float = Field(ge=0, description="vs the training library on the validation set")
    signature: Ed25519SignatureB64 | None = Field(
        default=None, description="Ed25519 signature (base64) of the payload's SHA-256 digest; None: unsigned"
    )


class ModelMetrics(Contract):
    mse: float = Field(ge=0)
    mae: float = Field(ge=0)
    precision: dict[str, float] = Field(default_factory=dict, description="per ViolationClass")
    recall: dict[str, float] = Field(default_factory=dict, description="per ViolationClass")
    n_train: int = Field(ge=0)
    n_test: int = Field(ge=0)


class ModelManifest(Contract):
    format_version: int = MODEL_FORMAT_VERSION
    model_id: str = Field(min_length=1, description="e.g. extrusion-cold-od-line-1")
    version: SemVer
    use_case: Identifier
    line_ids: list[Identifier] = Field(min_length=1)
    family: ModelFamily
    target: str
    features: list[str] = Field(min_length=1, description="feature order the payload expects")
    feature_schema_hash: Sha256Hex
    tiers: list[CompatibilityTier] = Field(min_length=1)
    training_start: UtcDatetime
    training_end: UtcDatetime
    training_data_sha256: Sha256Hex
    metrics: ModelMetrics
    created_at: UtcDatetime
    # Lineage; None in manifests written before these fields.
    template: ModelTemplate | None = None
    hyperparameters: dict[str, float | int | str] = Field(default_factory=dict)
    code_version: str | None = Field(default=None, description="git commit (or package version) that trained it")
    cv_rmse: float | None = Field(default=None, ge=0, description="mean RMSE over the time-ordered CV folds")
    label_mode: LabelMode = Field(
        default=LabelMode.LEVEL, description="what the payload's model predicts (the scorer always outputs levels)"
    )
    decision_margin: float = Field(
        default=0.0,
        ge=0,
        lt=MARGIN_LIMIT,
        description="violation decision margin in the payload, a fraction of the half spec band (decision.py), chosen "
        "on the training folds; 0 in manifests written before it",
    )
    identity: SignedIdentity | None = Field(
        default=None,
        description="the register step's signed identity of this version (signed_model.py); None: unsigned",
    )

    @model_validator(mode="after")
    def _tiers_unique(self) -> ModelManifest:
        precisions = [t.precision for t in self.tiers]
        if len(set(precisions)) != len(precisions):
            raise ValueError(f"tiers repeat a precision: {[p.value for p in precisions]}")
        return self

    def tier(self, precision: Precision) -> CompatibilityTier:
        for tier in self.tiers:
            if tier.precision == precision:
                return tier
        raise KeyError(f"model {self.model_id} {self.version} has no {precision.value} tier")


class ModelUpdate(Contract):
    """The configuration merged into the ModelRunner component to deliver a weight-only update.

    Greengrass delivers it as a deployment's configuration merge; the local delivery publishes
    the same document on the thing's model-update topic.
    """

    deployment_id: str = Field(min_length=1)
    model_id: str
    version: SemVer
    precision: Precision
    payload_uri: S3ObjectUri
    sha256: Sha256Hex
    features: list[str] = Field(min_length=1)
    feature_schema_hash: Sha256Hex
    # From the tier; None in documents older than these fields (the device then skips that check).
    signature: Ed25519SignatureB64 | None = Field(
        default=None, description="Ed25519 signature (base64) of the payload's SHA-256 digest; None: unsigned"
    )
    payload_bytes: int | None = Field(default=None, gt=0)
    architectures: list[Architecture] | None = Field(default=None, min_length=1)
    min_runtime_version: SemVer | None = None
    # The manifest's signed identity: a device with a public key refuses an update without it (signed_model.py).
    identity: SignedIdentity | None = None
    # The key holder's signed rollback, on an update that takes devices back to an older version
    # (`edgeloop models rollback`); a device with a key refuses any other downgrade (signed_model.py).
    rollback: SignedRollback | None = None


def feature_schema_hash(features: list[str]) -> str:
    """Identity of a feature vector layout: names and order. Device and model must agree on it."""
    import hashlib

    return hashlib.sha256("\n".join(features).encode()).hexdigest()
