"""Metric keys -> roles (Mímir's metric taxonomy), so one query or feature serves every line.

A use case's taxonomy says, per line, which key carries which role and how to convert its values
(role value = key value * scale + offset). These functions apply it to curated samples and to
rollups; rows whose key has no role on the line are dropped, as a role query cannot use them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgeloop.schemas import MetricRole, UseCaseConfig


def to_roles(frame: pd.DataFrame, use_case: UseCaseConfig, line_id: str) -> pd.DataFrame:
    """Curated samples (a `metric` and a `value` column) as roles: `metric` becomes `role`, values converted.

    Other columns are kept; the result has a `role` column instead of `metric`.
    """
    _require(frame, ("metric", "value"))
    mapped, role_index, roles = _lookup(frame["metric"], use_case, line_id)
    scale, offset = _conversion(roles)
    out = frame.loc[mapped].copy()
    out["value"] = out["value"].to_numpy(dtype=np.float64) * scale[role_index] + offset[role_index]
    out.insert(list(frame.columns).index("metric"), "role", _role_column(role_index, roles))
    return out.drop(columns="metric").reset_index(drop=True)


def rollups_to_roles(rollups: pd.DataFrame, use_case: UseCaseConfig, line_id: str) -> pd.DataFrame:
    """Rollups (count, sum, min, max, sum2, m2) of metric keys as rollups of roles.

    A linear map y = a x + b carries over exactly: sum_y = a sum + b n, sum2_y = a² sum2 +
    2ab sum + b² n, m2_y = a² m2, and min/max swap when a < 0.
    """
    _require(rollups, ("metric", "count", "sum", "min", "max", "sum2"))
    mapped, role_index, roles = _lookup(rollups["metric"], use_case, line_id)
    scale, offset = _conversion(roles)
    a, b = scale[role_index], offset[role_index]
    out = rollups.loc[mapped].copy()
    n = out["count"].to_numpy(dtype=np.float64)
    total, sum2 = out["sum"].to_numpy(), out["sum2"].to_numpy()
    low, high = out["min"].to_numpy() * a + b, out["max"].to_numpy() * a + b
    out["sum"] = a * total + b * n
    out["sum2"] = a * a * sum2 + 2 * a * b * total + b * b * n
    out["min"], out["max"] = np.minimum(low, high), np.maximum(low, high)
    if "m2" in out.columns:
        out["m2"] = a * a * out["m2"].to_numpy()
    out.insert(list(rollups.columns).index("metric"), "role", _role_column(role_index, roles))
    return out.drop(columns="metric").reset_index(drop=True)


def role_units(use_case: UseCaseConfig, line_id: str) -> dict[str, str]:
    """role -> the unit its values are in after conversion."""
    return {role.role: role.unit for role in use_case.roles_for_line(line_id).values()}


def _lookup(metric: pd.Series, use_case: UseCaseConfig, line_id: str):
    """(rows with a role, role index per such row, the roles) -- one dict lookup per distinct key."""
    taxonomy = use_case.roles_for_line(line_id)
    if not taxonomy:
        raise ValueError(f"use case {use_case.use_case!r} has no taxonomy for line_id={line_id!r}")
    codes, keys = pd.factorize(metric)
    roles = [taxonomy.get(str(key)) for key in keys]
    key_role = np.array([n if role is not None else -1 for n, role in enumerate(roles)] + [-1], dtype=np.int64)
    per_row = key_role[codes]  # codes of -1 (null keys) land on the trailing -1
    mapped = per_row >= 0
    return mapped, per_row[mapped], roles


def _conversion(roles: list[MetricRole | None]) -> tuple[np.ndarray, np.ndarray]:
    scale = np.array([r.scale if r else np.nan for r in roles], dtype=np.float64)
    offset = np.array([r.offset if r else np.nan for r in roles], dtype=np.float64)
    return scale, offset


def _role_column(role_index: np.ndarray, roles: list[MetricRole | None]) -> pd.Categorical:
    names = [r.role if r else f"__unmapped_{n}" for n, r in enumerate(roles)]
    used = sorted({names[i] for i in np.unique(role_index)})
    rank = {name: n for n, name in enumerate(used)}
    remap = np.array([rank.get(name, -1) for name in names], dtype=np.int64)
    return pd.Categorical.from_codes(remap[role_index] if len(role_index) else np.empty(0, np.int64), categories=used)


def _require(frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}; has {list(frame.columns)}")
