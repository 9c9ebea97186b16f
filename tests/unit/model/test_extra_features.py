"""The use case's extra features (issue 16): windows, EWMs, changes, setpoint steps and transport delays,
checked against naive per-pack loops on packs with gaps; one pack alone and in a batch give the same
bits; every parameter is in the name (so in the feature schema hash); the gateway's live window and
the cloud packer compute the same vector."""

from __future__ import annotations

import re

import numpy as np
import pytest

from edgeloop.cloud.packing.feature_table import extract_features
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.greengrass_components.model_runner.runner import LiveScorer
from edgeloop.model_runtime.alignment import align_to_grid
from edgeloop.model_runtime.features import pack_features
from edgeloop.schemas import feature_schema_hash, load_use_case
from edgeloop.schemas.use_case import UseCaseConfig

PERIOD, N_STEPS, LEVEL = 2, 20, 2  # seconds per step, steps per pack, steps of the short mean
FEATURES = {
    "metrics": ["up", "target"],
    "windows_s": [4, 10],
    "ewm_halflife_s": [3, 7.5],
    "changes_s": [6, 16],
    "level_s": LEVEL * PERIOD,
    "steps": [{"metric": "setpoint", "min_step": 0.5}],
    "transport": [
        {"upstream": "flow", "rate_metric": "speed", "distance": 30, "rate_period_s": 1},
        {"upstream": "target", "rate_metric": "rate", "distance": 0.2, "rate_period_s": 60, "outputs": ["at_label"]},
    ],
}
BASE = {
    "use_case": "small",
    "metrics": ["rate", "up", "sp", "target"],
    "target_metric": "target",
    "sample_period_s": PERIOD,
    "pack_window_s": N_STEPS * PERIOD,
    "horizon_s": 20,
    "label_window_s": 8,
    "example_stride_s": 10,
    "feature_stats": ["mean", "last"],
    "model_families": ["xgboost"],
    "precisions": ["fp32"],
    "taxonomy": {
        "rate": {"role": "speed", "unit": "m/s"},
        "up": {"role": "flow", "unit": "kg/h"},
        "sp": {"role": "setpoint", "unit": "bar"},
    },
}


def use_case(features: dict | None = None, **changes) -> UseCaseConfig:
    document = {**BASE, **changes}
    if features is not None:
        document["features"] = features
    return UseCaseConfig.model_validate(document)


SMALL = use_case(FEATURES)
NAMES = SMALL.feature_names


def random_packs(n_packs: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    packs = 10 + rng.normal(size=(n_packs, N_STEPS, 4)).cumsum(axis=1) * 0.3
    packs[..., 0] = rng.uniform(0.8, 6, size=(n_packs, 1))  # transport rate: delays of 3 to 19 steps
    moves = rng.normal(size=(n_packs, N_STEPS)) * (rng.random((n_packs, N_STEPS)) < 0.15)
    packs[..., 2] = 100 + np.round(moves.cumsum(axis=1))  # a setpoint: steps of whole bars, some below min_step
    packs[rng.random(packs.shape) < 0.15] = np.nan
    packs[1, :, 1] = np.nan  # a metric absent from a whole pack
    packs[2, :, 2] = 100.0  # a setpoint without a step
    return packs


def naive(pack: np.ndarray) -> dict[str, float]:
    """Each extra feature by the definition in schemas/feature_config.py, one number at a time."""
    out = {}

    def mean(column: np.ndarray, start: int, stop: int) -> float:
        values = column[start:stop]
        return float(np.mean(values[~np.isnan(values)])) if start >= 0 and (~np.isnan(values)).any() else np.nan

    for j, metric in ((1, "up"), (3, "target")):
        y = pack[:, j]
        for w in FEATURES["windows_s"]:
            steps = w // PERIOD
            out[f"{metric}__mean_{w}s"] = mean(y, N_STEPS - steps, N_STEPS)
            t = np.arange(N_STEPS - steps, N_STEPS) * PERIOD
            tail, ok = y[-steps:], ~np.isnan(y[-steps:])
            out[f"{metric}__slope_{w}s"] = np.polyfit(t[ok], tail[ok], 1)[0] if ok.sum() >= 2 else np.nan
        for h in FEATURES["ewm_halflife_s"]:
            ok = ~np.isnan(y)
            weights = 0.5 ** ((N_STEPS - 1 - np.arange(N_STEPS)) * PERIOD / h)
            name = f"{metric}__ewm_{h:g}s"
            out[name] = float((weights[ok] * y[ok]).sum() / weights[ok].sum()) if ok.any() else np.nan
        for lag in FEATURES["changes_s"]:
            earlier = mean(y, N_STEPS - lag // PERIOD - LEVEL, N_STEPS - lag // PERIOD)
            out[f"{metric}__change_{lag}s_of_mean_{LEVEL * PERIOD}s"] = mean(y, N_STEPS - LEVEL, N_STEPS) - earlier
    since, previous = N_STEPS * PERIOD, np.nan
    for i, value in enumerate(pack[:, 2]):
        if not np.isnan(value):
            if not np.isnan(previous) and abs(value - previous) > 0.5:
                since = (N_STEPS - i) * PERIOD
            previous = value
    out["sp__since_step_over_0.5"] = since
    rate = mean(pack[:, 0], N_STEPS - LEVEL, N_STEPS)
    for column, distance_s, outputs in ((1, 30, NAMES[-3:-1]), (3, 0.2 * 60, NAMES[-1:])):
        if np.isnan(rate):  # no rate, no delay
            out.update(dict.fromkeys(outputs, np.nan))
            continue
        delay = int(round(distance_s / rate / PERIOD))
        now = mean(pack[:, column], N_STEPS - LEVEL, N_STEPS)
        transit = now - mean(pack[:, column], N_STEPS - delay - LEVEL, N_STEPS - delay)
        # the short mean centred where the label window's middle (20 + 8 / 2 s after the pack end) was upstream
        seen_end = min(N_STEPS + (20 + 4) // PERIOD + LEVEL // 2 - delay, N_STEPS)
        at_label = mean(pack[:, column], seen_end - LEVEL, seen_end)
        out.update(zip(outputs, [transit, at_label][-len(outputs) :]))
    return out


def test_names_carry_every_parameter_in_a_fixed_order():
    extra = NAMES[len(BASE["metrics"]) * 2 :]
    per_metric = ["mean_4s", "slope_4s", "mean_10s", "slope_10s", "ewm_3s", "ewm_7.5s"]
    per_metric += ["change_6s_of_mean_4s", "change_16s_of_mean_4s"]
    assert extra == [
        *(f"{metric}__{stat}" for metric in ("up", "target") for stat in per_metric),
        "sp__since_step_over_0.5",
        "up__transit_change_30_over_rate_per_1s_of_mean_4s",
        "up__at_label_30_over_rate_per_1s_of_mean_4s",
        "target__at_label_0.2_over_rate_per_60s_of_mean_4s",
    ]


def test_without_a_features_block_the_features_and_hash_are_unchanged():
    plain = use_case()
    assert plain.feature_names == [f"{m}__{s}" for m in BASE["metrics"] for s in BASE["feature_stats"]]
    assert pack_features(random_packs(3), plain).shape == (3, 8)
    assert use_case(sample_period_s=4).feature_names == plain.feature_names, "level_s=10 unchecked when unused"


def test_each_feature_equals_its_naive_definition_on_packs_with_gaps():
    packs = random_packs(64)
    computed = pack_features(packs, SMALL)
    assert computed.dtype == np.float32 and computed.shape == (64, len(NAMES))
    columns = {name: computed[:, i] for i, name in enumerate(NAMES)}
    expected = [naive(pack) for pack in packs]
    for name in expected[0]:
        want = np.array([e[name] for e in expected])
        np.testing.assert_allclose(columns[name], want, rtol=2e-6, atol=2e-5, err_msg=name)
    transit = columns["up__transit_change_30_over_rate_per_1s_of_mean_4s"]
    at_label = columns["up__at_label_30_over_rate_per_1s_of_mean_4s"]
    now = np.array([e["up__mean_4s"] for e in expected])  # the window of the short mean
    assert np.isnan(transit).any() and np.isfinite(transit).sum() > 20, "some delays leave the pack, most fit"
    assert (at_label == now.astype(np.float32)).any() and (at_label != now.astype(np.float32)).any()
    assert columns["sp__since_step_over_0.5"][2] == N_STEPS * PERIOD


EVERY_KIND_ON_300_STEPS = {
    "windows_s": [30, 60, 120],
    "ewm_halflife_s": [10, 30],
    "changes_s": [60, 240],
    "steps": [{"metric": "screw_rpm", "min_step": 0.5}],
    "transport": [{"upstream": "hot_od_x", "rate_metric": "speed", "distance": 700, "rate_period_s": 60}],
}


@pytest.mark.parametrize("config", [SMALL, "extrusion", "pipe", "every"], ids=["small", "extrusion", "pipe", "every"])
def test_one_pack_alone_and_in_a_batch_give_the_same_bits(config):
    if config == "every":
        document = load_use_case("extrusion").model_dump(mode="json")
        config = UseCaseConfig.model_validate({**document, "features": EVERY_KIND_ON_300_STEPS})
    elif isinstance(config, str):
        config = load_pipe_use_case() if config == "pipe" else load_use_case(config)
    assert len(config.feature_names) > len(config.metrics) * len(config.feature_stats), "declares extra features"
    rng = np.random.default_rng(5)
    n_steps = int(config.pack_window_s / config.sample_period_s)
    packs = 50 + rng.normal(size=(40, n_steps, len(config.metrics))).cumsum(axis=1)
    packs[rng.random(packs.shape) < 0.1] = np.nan
    batch = pack_features(packs, config)
    single = np.stack([pack_features(pack, config) for pack in packs])
    assert batch.tobytes() == single.tobytes()
    assert np.isfinite(batch).mean() > 0.9


def load_pipe_use_case() -> UseCaseConfig:
    from edgeloop.device_shims.pipe_extrusion import EXAMPLE_DIR, USE_CASE_FILE

    return UseCaseConfig.from_file(EXAMPLE_DIR / USE_CASE_FILE)


@pytest.mark.parametrize(
    "change",
    [
        {"windows_s": [4, 12]},
        {"ewm_halflife_s": [3, 7]},
        {"changes_s": [6, 18]},
        {"level_s": 6},
        {"metrics": ["up"]},
        {"steps": [{"metric": "setpoint", "min_step": 1}]},
        {"transport": [{"upstream": "flow", "rate_metric": "speed", "distance": 31, "rate_period_s": 1}]},
        {"transport": [{"upstream": "flow", "rate_metric": "speed", "distance": 30, "rate_period_s": 60}]},
        {"transport": [{"upstream": "target", "rate_metric": "speed", "distance": 30, "rate_period_s": 1}]},
    ],
)
def test_any_parameter_change_changes_the_feature_schema_hash(change):
    assert feature_schema_hash(use_case({**FEATURES, **change}).feature_names) != feature_schema_hash(NAMES)


def test_taxonomy_roles_name_the_same_features_as_keys():
    by_key = {**FEATURES, "metrics": ["up", "target"], "steps": [{"metric": "sp", "min_step": 0.5}]}
    assert use_case(by_key).feature_names == NAMES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": ["up", "nozzle"]}, "features.metrics entry 'nozzle' is neither one of metrics"),
        ({"windows_s": [5]}, "features.windows_s entry 5: not a positive whole number of sample steps"),
        ({"windows_s": [2]}, "features.windows_s entry 2: shorter than 2 sample steps"),
        ({"windows_s": [42]}, "features.windows_s entry 42: longer than pack_window_s=40"),
        ({"windows_s": [4, 4]}, "features.windows_s=[4, 4] repeats a value"),
        ({"ewm_halflife_s": [0]}, "features.ewm_halflife_s entry 0.0 must be a positive number"),
        ({"changes_s": [38]}, "features.changes_s entry 38: lag + level_s (4) = 42 s exceeds pack_window_s=40"),
        ({"level_s": 3}, "features.level_s=3: not a positive whole number of sample steps"),
        ({"steps": [{"metric": "valve"}]}, "features.steps[0].metric='valve' is neither"),
        (
            {"transport": [{"upstream": "up", "rate_metric": "belt", "distance": 3}]},
            "features.transport[0].rate_metric='belt' is neither",
        ),
        ({"transport": [{"upstream": "up", "rate_metric": "rate", "distance": 0}]}, "distance"),
        ({"steps": [{"metric": "sp", "min_step": -1}]}, "min_step"),
        (
            {"steps": [{"metric": "sp", "min_step": 1}, {"metric": "setpoint", "min_step": 1.0}]},
            "features declare ['sp__since_step_over_1'] more than once",
        ),
    ],
)
def test_invalid_features_name_the_field_and_value(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        use_case({**FEATURES, **change})


def test_gateway_window_and_cloud_packer_compute_the_same_features():
    config = load_use_case("extrusion")
    start_ms, seconds = 1_767_225_600_000, 660
    samples = ExtrusionLineSimulator("line-1", seed=4, start_ms=start_ms).advance(seconds)
    live = LiveScorer(config)
    live.add(samples)
    end = start_ms + seconds * 1000
    index = {m: i for i, m in enumerate(config.metrics)}
    grid = align_to_grid(
        [t for _, t, _ in samples],
        [index[m] for m, _, _ in samples],
        [v for _, _, v in samples],
        n_metrics=len(index),
        start_ms=end - config.pack_window_s * 1000,
        n_steps=config.pack_window_s,
        period_ms=1000,
        max_gap_ms=5000,
    )
    gateway = live.window(end).features
    cloud = extract_features(np.stack([grid, grid[::-1]]), config)[0]
    assert gateway.dtype == np.float32 and len(gateway) == len(config.feature_names)
    assert gateway.astype(np.float64).tobytes() == cloud.tobytes()
    assert np.isfinite(gateway).all()
