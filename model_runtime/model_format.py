"""The weight-only model payload: one `.npz` container, shared by export (cloud) and scorer (device).

A payload holds plain arrays plus a JSON header stored as a uint8 array under `header`. Nothing is
pickled, so a device can load a payload from an untrusted channel without executing code, and
the device needs numpy only (no xgboost).

Header fields: format, format_version, model_id, version, family, objective, base_score (margin
space: the value tree outputs are added to), features (ordered), feature_schema_hash, precision,
n_features, label_mode ("level" or "change"; absent in payloads written before it: level) with
current_feature in change mode (label_mode.py), decision_margin (the violation decision margin,
decision.py; absent: 0.0), and for tree ensembles n_trees and threshold_encoding.
`arrays` names each stored array with its meaning, so a payload documents itself. Change-mode payloads
are format_version 3 so that a runtime which would ignore the mode refuses them.

Each family stores its own arrays, described (with how they are encoded, checked and decoded)
in its module: tree ensembles (family "xgboost", with per-feature float32 threshold tables
indexed by uint8/uint16, fp16 leaves or quantized int8 leaves) in tree_format, linear models
(family "linear") in linear_format.

Quantized tree payloads (precision "quantized", int8 leaves with a per-tree scale and offset) are
format_version 2, runtime 1.2.0. fp32 and fp16-leaves payloads stay format_version 1, readable by
every runtime; a runtime that only knows version 1 refuses version 2 on its format_version check.
"""

from __future__ import annotations

import io
import json

import numpy as np

from edgeloop.schemas.common import semver_key
from edgeloop.schemas.compat import StrEnum
from edgeloop.schemas.decision import check_margin
from edgeloop.schemas.model import MODEL_FORMAT_VERSION, ModelFamily, Precision, feature_schema_hash
from edgeloop.schemas.use_case import FEATURE_STATS, LabelMode

from .label_mode import current_index
from .linear_format import LinearModel, encode_linear, validate_linear_arrays
from .payload_checks import check_enum
from .tree_format import TreeEnsemble, encode_trees, validate_tree_arrays

FORMAT_NAME = "edgeloop-model"
FORMAT_VERSION = MODEL_FORMAT_VERSION  # fp32 and fp16-leaves payloads: every runtime reads them
QUANTIZED_FORMAT_VERSION = 2  # adds int8 leaves with a per-tree scale and offset
# change-mode payloads (label_mode "change": the scorer adds the current value back): a runtime that
# does not know the mode must refuse them rather than publish changes as levels
CHANGE_FORMAT_VERSION = 3
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION, QUANTIZED_FORMAT_VERSION, CHANGE_FORMAT_VERSION)
# The device runtime this code is, as tiers name it in min_runtime_version: 1.0.0 read fp32,
# 1.1.0 added fp16-leaves, 1.2.0 the quantized tier, 1.3.0 change-mode labels, the decision margin
# and the features beyond `<metric>__<stat>`. Provisioning and the recipes default to it.
RUNTIME_VERSION = "1.3.0"
# the first runtime that reads each precision tier
_PRECISION_RUNTIME = {Precision.FP32: "1.0.0", Precision.FP16_LEAVES: "1.1.0", Precision.QUANTIZED: "1.2.0"}
# the first runtime that adds the current value back (change mode), classifies at a decision margin and
# computes the declared extra features: an older one would publish changes as levels, decide at the
# limits or lack the features
PREDICTIVE_RUNTIME = "1.3.0"
HEADER_ARRAY = "header"
_ZIP_MAGIC = b"PK\x03\x04"


class Objective(StrEnum):
    REG_SQUAREDERROR = "reg:squarederror"
    BINARY_LOGISTIC = "binary:logistic"


# The precision tiers this format defines, and the format version each is written in (the lowest
# that can hold it, so older runtimes keep reading the tiers they always could).
_PRECISION_FORMAT_VERSION = {
    Precision.FP32: FORMAT_VERSION,
    Precision.FP16_LEAVES: FORMAT_VERSION,
    Precision.QUANTIZED: QUANTIZED_FORMAT_VERSION,
}


# --- writing -------------------------------------------------------------------------------------


def write_payload(
    model: TreeEnsemble | LinearModel,
    *,
    model_id: str,
    version: str,
    objective: Objective | str,
    base_score: float,
    features: list[str],
    precision: Precision = Precision.FP32,
    label_mode: LabelMode | str = LabelMode.LEVEL,
    current_feature: str | None = None,
    decision_margin: float = 0.0,
) -> bytes:
    """Serialise a model into payload bytes. `base_score` is in margin space.

    label_mode "change": the model predicts future minus now and the scorer adds the feature
    `current_feature` back (label_mode.py); the payload is then format version 3. `decision_margin`: the
    line's tuned violation decision margin (decision.py); written only when not 0, so a margin-0 payload
    keeps the bytes it always had."""
    precision = Precision(precision)
    objective = Objective(objective)
    label_mode = LabelMode(label_mode)
    if precision not in _PRECISION_FORMAT_VERSION:
        raise ValueError(f"precision={precision.value!r} is not defined by format version {FORMAT_VERSION}")
    if precision == Precision.QUANTIZED and not isinstance(model, TreeEnsemble):
        raise ValueError(f"precision={precision.value!r} applies to tree ensembles only, not {type(model).__name__}")
    _check_features(features)
    mode_fields = {"label_mode": label_mode.value}
    if current_feature is not None:
        mode_fields["current_feature"] = current_feature
    _check_label_mode(mode_fields, objective, features)
    if check_margin(decision_margin) != 0.0:
        mode_fields["decision_margin"] = float(decision_margin)
    header: dict = {
        **mode_fields,
        "format": FORMAT_NAME,
        "format_version": payload_format_version(precision, label_mode),
        "model_id": model_id,
        "version": version,
        "objective": objective.value,
        "base_score": float(np.float32(base_score)),  # a float32 widened to double round-trips exactly
        "features": list(features),
        "feature_schema_hash": feature_schema_hash(list(features)),
        "precision": precision.value,
        "n_features": len(features),
    }
    if isinstance(model, TreeEnsemble):
        arrays, family_header = encode_trees(model, len(features), precision)
        header.update(family=ModelFamily.XGBOOST.value, **family_header)
    elif isinstance(model, LinearModel):
        arrays, family_header = encode_linear(model, len(features))
        header.update(family=ModelFamily.LINEAR.value, **family_header)
    else:
        raise TypeError(f"model must be a TreeEnsemble or LinearModel, not {type(model).__name__}")
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{HEADER_ARRAY: np.frombuffer(header_bytes, dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def payload_format_version(precision: Precision, label_mode: LabelMode) -> int:
    """The lowest format version that holds a tier in a label mode (older runtimes keep what they read)."""
    version = _PRECISION_FORMAT_VERSION[precision]
    return max(version, CHANGE_FORMAT_VERSION) if label_mode == LabelMode.CHANGE else version


def precision_min_runtime_version(precision: Precision | str) -> str:
    """The first runtime that reads a precision tier."""
    return _PRECISION_RUNTIME[Precision(precision)]


def min_runtime_version(header: dict) -> str:
    """The oldest runtime that scores a payload as meant, from what its header says it needs: its precision
    tier, and PREDICTIVE_RUNTIME for change mode, a decision margin other than 0, or a feature that is not a
    base `<metric>__<stat>` one (stat in FEATURE_STATS)."""
    needed = [precision_min_runtime_version(header["precision"])]
    change = header.get("label_mode", LabelMode.LEVEL.value) == LabelMode.CHANGE.value
    if change or header.get("decision_margin", 0.0) != 0.0 or any(map(is_extended_feature, header["features"])):
        needed.append(PREDICTIVE_RUNTIME)
    return max(needed, key=semver_key)


def is_extended_feature(name: str) -> bool:
    """Whether a feature name is beyond the base `<metric>__<stat>` ones every runtime computes."""
    parts = name.split("__")
    return not (len(parts) == 2 and parts[1] in FEATURE_STATS)


def _check_label_mode(header: dict, objective: Objective, features: list[str]) -> LabelMode:
    """label_mode (absent: level, as every payload before the field) and current_feature agree."""
    mode = check_enum("label_mode", header.get("label_mode", LabelMode.LEVEL.value), LabelMode)
    current = header.get("current_feature")
    if mode == LabelMode.LEVEL:
        if current is not None:
            raise ValueError(f"header current_feature={current!r} is only meaningful with label_mode 'change'")
        return mode
    if not isinstance(current, str):
        raise ValueError(f"header label_mode='change' needs current_feature (a feature name), got {current!r}")
    current_index(features, current)
    if objective != Objective.REG_SQUAREDERROR:
        raise ValueError(f"header label_mode='change' applies to regression, not objective={objective.value!r}")
    return mode


def _check_features(features: list[str]) -> None:
    if not features or not all(isinstance(f, str) and f for f in features):
        raise ValueError(f"features must be a non-empty list of non-empty names, got {features!r}")
    if len(set(features)) != len(features):
        raise ValueError(f"features repeat a name: {features}")


# --- reading -------------------------------------------------------------------------------------


def read_payload(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and validate payload bytes. Raises ValueError saying what is wrong."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data.startswith(_ZIP_MAGIC):
        raise ValueError(f"payload is not an npz container: starts with {data[:8]!r}, expected {_ZIP_MAGIC!r}")
    arrays = _load_arrays(data)
    header = _parse_header(arrays.pop(HEADER_ARRAY, None))
    family = ModelFamily(header["family"])
    if family == ModelFamily.XGBOOST:
        validate_tree_arrays(header, arrays)
    else:
        validate_linear_arrays(header, arrays)
    return header, arrays


def _load_arrays(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            # reading every member here makes CRC and decompression errors surface now
            return {name: npz[name] for name in npz.files}
    # BadZipFile, zlib.error, EOFError, a bad .npy header...: any decoding failure means garbled bytes
    except Exception as exc:
        raise ValueError(f"payload container is unreadable ({type(exc).__name__}: {exc})") from exc


_HEADER_FIELDS = {
    "format": str,
    "format_version": int,
    "model_id": str,
    "version": str,
    "family": str,
    "objective": str,
    "base_score": (int, float),
    "features": list,
    "feature_schema_hash": str,
    "precision": str,
    "n_features": int,
}


def _parse_header(raw: np.ndarray | None) -> dict:
    if raw is None:
        raise ValueError(f"payload has no {HEADER_ARRAY!r} array")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"header must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ValueError(f"header must be a JSON object, got {type(header).__name__}")
    for field, kind in _HEADER_FIELDS.items():
        if field not in header:
            raise ValueError(f"header has no {field!r}")
        if not isinstance(header[field], kind) or isinstance(header[field], bool):
            raise ValueError(f"header {field}={header[field]!r} has the wrong type")
    if header["format"] != FORMAT_NAME:
        raise ValueError(f"header format={header['format']!r}, expected {FORMAT_NAME!r}")
    if header["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise ValueError(
            f"header format_version={header['format_version']} is not supported "
            f"(this reader: {list(SUPPORTED_FORMAT_VERSIONS)}); the payload needs a newer runtime"
        )
    family = check_enum("family", header["family"], ModelFamily)
    objective = check_enum("objective", header["objective"], Objective)
    precision = check_enum("precision", header["precision"], Precision)
    if precision not in _PRECISION_FORMAT_VERSION:
        raise ValueError(f"header precision={precision.value!r} is not defined by format version {FORMAT_VERSION}")
    _check_features(header["features"])
    mode = _check_label_mode(header, objective, header["features"])
    expected_version = payload_format_version(precision, mode)
    if header["format_version"] != expected_version:
        raise ValueError(
            f"header format_version={header['format_version']} is not supported for precision={precision.value!r} "
            f"and label_mode={mode.value!r} (written as format version {expected_version})"
        )
    if precision == Precision.QUANTIZED and family != ModelFamily.XGBOOST:
        raise ValueError(f"header precision={precision.value!r} applies to tree ensembles only, not {family.value!r}")
    if header["n_features"] != len(header["features"]):
        raise ValueError(f"header n_features={header['n_features']} but {len(header['features'])} features are named")
    actual_hash = feature_schema_hash(header["features"])
    if header["feature_schema_hash"] != actual_hash:
        raise ValueError(
            f"header feature_schema_hash={header['feature_schema_hash']} does not match its features ({actual_hash})"
        )
    if "decision_margin" in header:
        check_margin(header["decision_margin"], "header decision_margin")
    if not np.isfinite(header["base_score"]):
        raise ValueError(f"header base_score={header['base_score']} is not finite")
    return header
