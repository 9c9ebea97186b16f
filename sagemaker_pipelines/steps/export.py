"""Export a trained booster as weight-only payloads, one per compatibility tier, with parity checks.

Every tier is scored with the device's own numpy scorer against the training library's own
predictions (`Booster.inplace_predict`; gblinear's `predict` on the standardized features for
lasso, which the payload carries as feature_center/feature_scale) on the held-out test set; the measured max_abs_error goes into the manifest. Each tier's bound is a
fraction of the test target's standard deviation: 0 for fp32 (bit-exact or export fails), 1e-3
for fp16-leaves, 1e-2 for quantized (int8 leaves, payload format version 2).

A change-mode model (use case `label.mode: change`) is exported with label_mode "change" and the
current value's feature in its header; parity is checked in level space: the device scorer's output
against the training library's prediction plus the same float32 current value (label_mode.to_level).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import xgboost as xgb

from edgeloop.model_runtime.label_mode import to_level
from edgeloop.model_runtime.linear_format import LinearModel
from edgeloop.model_runtime.model_format import (
    Objective,
    min_runtime_version,
    precision_min_runtime_version,
    read_payload,
    write_payload,
)
from edgeloop.model_runtime.scorer import load_payload
from edgeloop.model_runtime.signing import Ed25519PrivateKey, sign_payload
from edgeloop.model_runtime.tree_format import TreeEnsemble
from edgeloop.schemas.model import (
    TEMPLATE_FAMILY,
    Architecture,
    CompatibilityTier,
    ModelFamily,
    ModelManifest,
    Precision,
    feature_schema_hash,
)
from edgeloop.schemas.use_case import LabelMode

from .artifacts import payload_key
from .templates import Standardization
from .train import TrainedModel

ALL_ARCHITECTURES = tuple(Architecture)  # every tier runs on every architecture the enum names


class ParityError(RuntimeError):
    """The device scorer disagrees with the training library beyond a tier's tolerance."""


@dataclass(frozen=True)
class TierSpec:
    precision: Precision
    architectures: tuple[Architecture, ...]
    # max |device - training library| on the test set, as a fraction of std(y_test): a bound in the
    # target's own units, so one number works for millimetres and for probabilities alike
    max_error_per_target_std: float

    def error_bound(self, y_test: np.ndarray) -> float:
        return self.max_error_per_target_std * float(np.std(np.asarray(y_test, dtype=np.float64)))

    @property
    def min_runtime_version(self) -> str:
        """The first runtime that reads this precision; a payload's own tier may need a newer one
        (model_format.min_runtime_version)."""
        return precision_min_runtime_version(self.precision)


# One entry per payload tier. fp32 is exact by construction; lossy tiers state their tolerance.
TIERS: dict[Precision, TierSpec] = {
    # runtime 1.0.0 is the first scorer; it reads float32 leaves everywhere
    Precision.FP32: TierSpec(Precision.FP32, ALL_ARCHITECTURES, max_error_per_target_std=0.0),
    # Half the leaf bytes, for the small 32-bit gateways (armv7l) most of all, but numpy upcasts the
    # float16 leaves to float32 on load, so every architecture runs it the same way. The 1.1.0 floor
    # keeps gateways whose runtime predates float16 leaves on the fp32 tier.
    Precision.FP16_LEAVES: TierSpec(Precision.FP16_LEAVES, ALL_ARCHITECTURES, max_error_per_target_std=1e-3),
    # int8 leaves with a per-tree scale and offset (payload format version 2, which runtime 1.2.0
    # first reads), dequantized to float32 at load, so any architecture can run it; it is the
    # smallest tier, for the most constrained gateways. Each leaf is off by at most half its tree's
    # step (leaf range / 254) and the errors add up over the trees, hence a looser bound: 1% of
    # std(y_test) keeps the error far below any useful model's own error.
    Precision.QUANTIZED: TierSpec(Precision.QUANTIZED, ALL_ARCHITECTURES, max_error_per_target_std=1e-2),
}


@dataclass(frozen=True)
class ExportedModel:
    manifest: ModelManifest
    payloads: dict[Precision, bytes]


# --- booster -> arrays ---------------------------------------------------------------------------


def booster_objective(booster: xgb.Booster) -> Objective:
    learner = json.loads(booster.save_config())["learner"]
    name = learner["objective"]["name"]
    try:
        return Objective(name)
    except ValueError:
        raise ValueError(f"objective={name!r} is not supported; supported: {[o.value for o in Objective]}") from None


def booster_base_margin(booster: xgb.Booster, objective: Objective) -> np.float32:
    """base_score in margin space, the float32 XGBoost itself starts every prediction from.

    Read from XGBoost rather than re-derived: for binary:logistic it clamps base_score to
    [1e-6, 1 - 1e-6] and takes -logf(1/p - 1) with the C library's logf, which numpy's float32 log
    misses by an ulp for about one base score in five. A copy of the model whose every leaf (gbtree)
    or weight (gblinear) is -0.0, so that base + -0.0 + ... is base, predicts that margin for a row of
    missing values. The copy keeps its trees: a model without any counts as unfitted, and XGBoost then
    skips the link when it estimated base_score itself. `objective` checks the answer against the link.
    """
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    base = _single_base_score(learner["learner_model_param"]["base_score"])
    gbm = learner["gradient_booster"]
    if gbm["name"] == "gbtree":
        for tree in gbm["model"]["trees"]:
            leaf = np.asarray(tree["left_children"]) < 0
            tree["split_conditions"] = np.where(leaf, -0.0, tree["split_conditions"]).tolist()
    elif gbm["name"] == "gblinear":
        gbm["model"]["weights"] = [-0.0] * len(gbm["model"]["weights"])
    else:
        raise ValueError(f"booster={gbm['name']!r} is neither a tree ensemble (gbtree) nor linear (gblinear)")
    bare = xgb.Booster(params={"nthread": 1})
    bare.load_model(bytearray(json.dumps(model).encode()))
    missing_row = np.full((1, booster.num_features()), np.nan, dtype=np.float32)
    margin = bare.predict(xgb.DMatrix(missing_row, missing=np.nan), output_margin=True, validate_features=False).ravel()
    if margin.shape != (1,):
        raise ValueError(f"booster predicts {margin.size} margins; only single-target models are supported")
    _check_link(np.float32(margin[0]), base, objective)
    return np.float32(margin[0])


def _single_base_score(raw: str) -> np.float32:
    values = json.loads(raw) if raw.startswith("[") else [float(raw)]  # 3.x stores a vector
    if len(values) != 1:
        raise ValueError(f"base_score {raw} has {len(values)} targets; only single-target models are supported")
    return np.float32(values[0])


def _check_link(margin: np.float32, base: np.float32, objective: Objective) -> None:
    """The margin XGBoost gave is its link of base_score: exact for the identity, within 4 float32 ulps
    of the float64 log for the logistic (same float32 steps before the log: clamp, 1/p - 1)."""
    if objective == Objective.BINARY_LOGISTIC:
        eps = np.float32(1e-6)
        p = np.minimum(np.maximum(base, eps), np.float32(1) - eps)
        expected = -np.log(np.float64(np.float32(np.float32(1) / p) - np.float32(1)))
        tolerance = 4 * float(np.spacing(np.float32(abs(expected))))
    else:
        expected, tolerance = float(base), 0.0
    if not abs(float(margin) - expected) <= tolerance:  # `not <=` so that a NaN margin fails too
        raise ValueError(f"XGBoost's base margin {margin!r} is not the {objective.value} link of base_score={base!r}")


def booster_trees(booster: xgb.Booster) -> TreeEnsemble:
    """Node arrays of a gbtree booster, in XGBoost's node order."""
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    if model["name"] != "gbtree":
        raise ValueError(f"booster={model['name']!r} is not a tree ensemble (gbtree)")
    trees = model["model"]["trees"]
    if not trees:
        raise ValueError("booster has no trees")
    columns: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "default_left", "leaf")}
    sizes = []
    for tree in trees:
        if any(tree["split_type"]) or tree["tree_param"].get("size_leaf_vector", "1") not in ("0", "1"):
            raise ValueError(f"tree {tree['id']} uses categorical splits or vector leaves: not supported")
        left = np.asarray(tree["left_children"], dtype=np.int32)
        conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
        leaf = left < 0
        columns["feature"].append(np.asarray(tree["split_indices"], dtype=np.int32))
        columns["threshold"].append(np.where(leaf, np.float32(np.nan), conditions))
        columns["left"].append(left)
        columns["right"].append(np.asarray(tree["right_children"], dtype=np.int32))
        columns["default_left"].append(np.asarray(tree["default_left"], dtype=bool))
        columns["leaf"].append(np.where(leaf, conditions, np.float32(0)))  # XGBoost keeps leaf outputs here
        sizes.append(len(left))
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(sizes)
    joined = {k: np.concatenate(v) for k, v in columns.items()}
    return TreeEnsemble(
        tree_offsets=offsets,
        split_feature=joined["feature"],
        threshold=joined["threshold"].astype(np.float32),
        left_child=joined["left"],
        right_child=joined["right"],
        default_left=joined["default_left"],
        leaf_value=joined["leaf"].astype(np.float32),
    )


def booster_linear(booster: xgb.Booster, standardization: Standardization | None = None) -> LinearModel:
    model = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    if model["name"] != "gblinear":
        raise ValueError(f"booster={model['name']!r} is not a linear model (gblinear)")
    weights = np.asarray(model["model"]["weights"], dtype=np.float32)  # n_features weights, then the bias
    if standardization is None:
        return LinearModel(weights=weights[:-1], bias=float(weights[-1]))
    return LinearModel(
        weights=weights[:-1],
        bias=float(weights[-1]),
        feature_center=standardization.center,
        feature_scale=standardization.scale,
    )


def booster_family(booster: xgb.Booster) -> ModelFamily:
    name = json.loads(booster.save_config())["learner"]["gradient_booster"]["name"]
    return ModelFamily.LINEAR if name == "gblinear" else ModelFamily.XGBOOST


def payload_from_booster(
    booster: xgb.Booster,
    *,
    model_id: str,
    version: str,
    features: list[str],
    precision: Precision = Precision.FP32,
    standardization: Standardization | None = None,
    label_mode: LabelMode = LabelMode.LEVEL,
    current_feature: str | None = None,
    decision_margin: float = 0.0,
) -> bytes:
    """The booster as a payload; in change mode the header names the current value's feature, and a
    decision margin other than 0 goes into the header (decision.py)."""
    objective = booster_objective(booster)
    family = booster_family(booster)
    if family == ModelFamily.XGBOOST and standardization is not None:
        raise ValueError("standardization applies to linear models only; this booster is a tree ensemble")
    model = booster_trees(booster) if family == ModelFamily.XGBOOST else booster_linear(booster, standardization)
    return write_payload(
        model,
        model_id=model_id,
        version=version,
        objective=objective,
        base_score=booster_base_margin(booster, objective),
        features=features,
        precision=precision,
        label_mode=label_mode,
        current_feature=current_feature,
        decision_margin=decision_margin,
    )


# --- parity and manifest -------------------------------------------------------------------------


def reference_predict(
    booster: xgb.Booster, X: np.ndarray, standardization: Standardization | None = None
) -> np.ndarray:
    """The training library's own float32 predictions (gblinear has no inplace_predict); a standardized
    model sees (X - center) / scale in float32, exactly what the device computes before its weights."""
    X = np.asarray(X, dtype=np.float32)
    if standardization is not None:
        X = standardization.apply(X)
    if booster_family(booster) == ModelFamily.LINEAR:
        return booster.predict(xgb.DMatrix(X, missing=np.nan)).astype(np.float32)
    return np.asarray(booster.inplace_predict(X), dtype=np.float32)


def parity_error(
    booster: xgb.Booster,
    payload: bytes,
    X: np.ndarray,
    standardization: Standardization | None = None,
    *,
    current_column: int | None = None,
) -> float:
    """Largest |device - XGBoost| over X, NaN-aware (a NaN on one side only counts as infinite).

    With `current_column` (a change-mode model) both sides are levels: XGBoost's prediction plus
    X[:, current_column] as label_mode.to_level adds it, against the scorer's own level."""
    scorer = load_payload(payload, expected_sha256=hashlib.sha256(payload).hexdigest())
    mode = LabelMode.LEVEL if current_column is None else LabelMode.CHANGE
    expected = to_level(reference_predict(booster, X, standardization), X, mode, current_column)
    actual = scorer.predict(X)
    both_nan = np.isnan(expected) & np.isnan(actual)
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
    # bit-exact means equal bits, not just equal values: +0.0 vs -0.0 does not matter to anyone
    return float(diff.max(initial=0.0))


def export_model(
    trained: TrainedModel,
    *,
    model_id: str,
    version: str,
    use_case: str,
    line_ids: list[str],
    target: str,
    precisions: tuple[Precision, ...] = (Precision.FP32,),
    created_at: datetime | None = None,
    signing_key: Ed25519PrivateKey | None = None,
    code_version: str | None = None,
) -> ExportedModel:
    """Payloads for each requested tier plus the manifest that describes them.

    With `signing_key`, every tier's payload is signed (signing.sign_payload: Ed25519 over the payload's
    SHA-256 digest) and the signature goes into its tier; without, the tiers are unsigned and devices
    configured with a public key will refuse them. `code_version` (a git commit or package version)
    goes into the manifest's lineage with the template, hyper-parameters and CV RMSE.
    """
    family = _family(trained)
    if len(trained.X_test) == 0:
        raise ValueError("trained model has an empty test set: parity cannot be checked")
    payloads: dict[Precision, bytes] = {}
    tiers: list[CompatibilityTier] = []
    if len(set(precisions)) != len(precisions):
        raise ValueError(f"precisions repeat a tier: {[Precision(p).value for p in precisions]}")
    for precision in tiers_for_family(precisions, family):
        spec = _tier_spec(precision)
        payload, error = _parity_checked_payload(trained, spec, model_id=model_id, version=version)
        payloads[precision] = payload
        tiers.append(_tier(spec, model_id, version, payload, error, signing_key))
    manifest = ModelManifest(
        model_id=model_id,
        version=version,
        use_case=use_case,
        line_ids=line_ids,
        family=family,
        target=target,
        features=trained.feature_names,
        feature_schema_hash=feature_schema_hash(trained.feature_names),
        tiers=tiers,
        training_start=trained.training_start,
        training_end=trained.training_end,
        training_data_sha256=trained.training_data_sha256,
        metrics=trained.metrics,
        created_at=created_at or datetime.now(UTC),
        template=trained.template,
        hyperparameters=trained.hyperparameters,
        code_version=code_version,
        cv_rmse=trained.cv_rmse,
        label_mode=trained.label_mode,
        decision_margin=trained.decision_margin,
    )
    return ExportedModel(manifest=manifest, payloads=payloads)


def _parity_checked_payload(
    trained: TrainedModel, spec: TierSpec, *, model_id: str, version: str
) -> tuple[bytes, float]:
    """One tier's payload and its max_abs_error on the test set; ParityError beyond the tier's bound."""
    payload = payload_from_booster(
        trained.booster,
        model_id=model_id,
        version=version,
        features=trained.feature_names,
        precision=spec.precision,
        standardization=trained.standardization,
        label_mode=trained.label_mode,
        current_feature=trained.current_feature,
        decision_margin=trained.decision_margin,
    )
    error = parity_error(
        trained.booster, payload, trained.X_test, trained.standardization, current_column=trained.current_column
    )
    bound = spec.error_bound(trained.y_test)
    if not error <= bound:  # `not <=` so that a NaN error fails too
        raise ParityError(
            f"{spec.precision.value} payload of {model_id} {version}: max_abs_error={error!r} exceeds the bound "
            f"{bound!r} ({spec.max_error_per_target_std!r} x std(y_test)) on {len(trained.X_test)} test rows"
        )
    return payload, error


def tiers_for_family(precisions: tuple[Precision, ...], family: ModelFamily) -> tuple[Precision, ...]:
    """The requested tiers a payload family has. Quantizing is a tree-leaf technique; a linear model is a
    few hundred bytes at fp32 already, so its manifest lists the other tiers and devices that run only
    the quantized tier are excluded from it with that reason."""
    kept = tuple(Precision(p) for p in precisions if not (family is ModelFamily.LINEAR and p == Precision.QUANTIZED))
    if not kept:
        asked = [Precision(p).value for p in precisions]
        raise ValueError(f"precisions={asked}: none of these tiers exists for {family.value} models")
    return kept


def _family(trained: TrainedModel) -> ModelFamily:
    """The template's payload family; the booster must agree, or the payload would not be that family."""
    family = TEMPLATE_FAMILY[trained.template]
    if booster_family(trained.booster) != family:
        raise ValueError(
            f"template={trained.template.value!r} exports as family {family.value!r}, but the booster is "
            f"{booster_family(trained.booster).value!r}"
        )
    return family


def _tier_spec(precision: Precision) -> TierSpec:
    try:
        return TIERS[Precision(precision)]
    except KeyError:
        available = [p.value for p in TIERS]
        raise ValueError(
            f"precision={Precision(precision).value!r} has no export tier yet; available: {available}"
        ) from None


def _tier(
    spec: TierSpec,
    model_id: str,
    version: str,
    payload: bytes,
    error: float,
    signing_key: Ed25519PrivateKey | None = None,
) -> CompatibilityTier:
    return CompatibilityTier(
        precision=spec.precision,
        architectures=list(spec.architectures),
        min_runtime_version=min_runtime_version(read_payload(payload)[0]),
        payload_key=payload_key(model_id, version, spec.precision),
        payload_bytes=len(payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        max_abs_error=error,
        signature=sign_payload(payload, signing_key) if signing_key is not None else None,
    )


__all__ = [
    "ExportedModel",
    "ParityError",
    "TIERS",
    "TierSpec",
    "booster_trees",
    "export_model",
    "parity_error",
    "payload_from_booster",
    "reference_predict",
    "tiers_for_family",
]
