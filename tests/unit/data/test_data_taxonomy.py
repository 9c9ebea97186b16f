"""Taxonomy: metric keys -> roles in shared units, per line, in any use case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeloop.cloud.datalake.rollups import rollup_samples
from edgeloop.cloud.packing.taxonomy import role_units, rollups_to_roles, to_roles
from edgeloop.schemas import UseCaseConfig, load_use_case
from edgeloop.schemas.use_case import USE_CASES_DIR

EXTRUSION = load_use_case("extrusion")
T0 = 1_767_225_600_000


def config(**overrides) -> dict:
    document = {
        "use_case": "mini",
        "metrics": ["die_temp", "speed", "od"],
        "target_metric": "od",
        "sample_period_s": 1,
        "pack_window_s": 60,
        "horizon_s": 60,
        "label_window_s": 10,
        "example_stride_s": 10,
        "feature_stats": ["mean"],
        "model_families": ["xgboost"],
        "precisions": ["fp32"],
        "taxonomy": {
            "die_temp": {"role": "die_temperature", "unit": "degC"},
            "speed": {"role": "line_speed", "unit": "m/min"},
        },
    }
    document.update(overrides)
    return document


FAHRENHEIT = {"role": "die_temperature", "unit": "degC", "source_unit": "degF", "scale": 5 / 9, "offset": -160 / 9}


def test_every_use_case_file_loads_and_round_trips_through_json():
    files = sorted(p.stem for p in USE_CASES_DIR.glob("*.yaml"))
    assert {"extrusion", "injection_molding"} <= set(files)
    for name in files:
        use_case = load_use_case(name)
        assert UseCaseConfig.model_validate_json(use_case.model_dump_json()) == use_case
        assert set(use_case.roles_for_line(None)) <= use_case.accepted_metrics


def test_a_config_without_taxonomy_stays_valid():
    document = config()
    del document["taxonomy"]
    plain = UseCaseConfig.model_validate(document)
    assert plain.taxonomy == {} and plain.line_taxonomy == {} and plain.roles_for_line("line-1") == {}


def test_extrusion_maps_every_metric_and_converts_the_imperial_line():
    assert set(EXTRUSION.taxonomy) == set(EXTRUSION.metrics)
    assert EXTRUSION.key_for_role("line-1", "die_temperature") == "temp_die"
    frame = pd.DataFrame(
        {
            "metric": ["temp_die", "pressure", "cold_od_average__predicted"],
            "time_ms": [T0] * 3,
            "value": [392.0, 1000.0, 5.0],
        }
    )
    us = to_roles(frame, EXTRUSION, "line-us-1")
    assert list(us["role"]) == ["die_temperature", "melt_pressure"]  # the prediction has no role: dropped
    np.testing.assert_allclose(us["value"], [200.0, 68.9475729])
    assert list(to_roles(frame, EXTRUSION, "line-1")["value"]) == [392.0, 1000.0]
    assert role_units(EXTRUSION, "line-us-1")["die_temperature"] == "degC"


def test_lines_with_different_keys_meet_on_one_role():
    molding = load_use_case("injection_molding")
    press_1 = pd.DataFrame({"thing_name": "gw-1", "metric": ["melt_temp_f", "cycle_time"], "value": [437.0, 20.0]})
    press_2 = pd.DataFrame({"thing_name": "gw-2", "metric": ["melt_temp_c", "cycle_time"], "value": [225.0, 21.0]})
    both = pd.concat([to_roles(press_1, molding, "press-1"), to_roles(press_2, molding, "press-2")], ignore_index=True)
    melt = both[both["role"].astype(str) == "melt_temperature"]
    np.testing.assert_allclose(melt["value"], [225.0, 225.0])
    assert list(both.columns) == ["thing_name", "role", "value"]
    assert molding.key_for_role("press-2", "melt_temperature") == "melt_temp_c"
    assert molding.key_for_role("press-1", "melt_temperature") == "melt_temp_f"
    with pytest.raises(KeyError, match="role 'gate_temperature' has no metric key on line 'press-1'"):
        molding.key_for_role("press-1", "gate_temperature")


def test_a_line_entry_replaces_the_shared_key_of_its_role():
    use_case = UseCaseConfig.model_validate(config(line_taxonomy={"line-2": {"die_temp_f": FAHRENHEIT}}))
    assert set(use_case.roles_for_line("line-2")) == {"die_temp_f", "speed"}
    assert set(use_case.roles_for_line("line-1")) == {"die_temp", "speed"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"taxonomy": {"die_tmp": {"role": "die_temperature", "unit": "degC"}}},
            r"taxonomy keys \['die_tmp'\] are not among metrics",
        ),
        (
            {"taxonomy": {"die_temp": {"role": "t", "unit": "degC"}, "od": {"role": "t", "unit": "mm"}}},
            r"in the shared taxonomy several keys map to one role: \{'t': \['die_temp', 'od'\]\}",
        ),
        (
            {"line_taxonomy": {"line-2": {"a": FAHRENHEIT, "b": FAHRENHEIT}}},
            r"in line 'line-2' several keys map to one role: \{'die_temperature': \['a', 'b'\]\}",
        ),
        ({"taxonomy": {"od": {"role": "od", "unit": "mm", "scale": 0}}}, r"scale=0.0 would map every value"),
        ({"taxonomy": {"od": {"role": "Outer Diameter", "unit": "mm"}}}, r"taxonomy.od.role"),
        ({"taxonomy": {"od": {"role": "od", "unit": "mm", "offset": float("nan")}}}, r"taxonomy.od.offset"),
        ({"line_taxonomy": {"Line 2": {}}}, r"line_taxonomy.Line 2"),
    ],
)
def test_bad_taxonomies_name_the_field_and_value(overrides, message):
    with pytest.raises(ValidationError, match=message):
        UseCaseConfig.model_validate(config(**overrides))


def test_to_roles_refuses_frames_and_lines_it_cannot_map():
    with pytest.raises(ValueError, match=r"frame lacks columns \['value'\]"):
        to_roles(pd.DataFrame({"metric": ["speed"]}), EXTRUSION, "line-1")
    plain = UseCaseConfig.model_validate(config(taxonomy={}))
    with pytest.raises(ValueError, match="use case 'mini' has no taxonomy for line_id='line-1'"):
        to_roles(pd.DataFrame({"metric": ["speed"], "value": [1.0]}), plain, "line-1")


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-50, 50).filter(lambda a: abs(a) > 1e-3),
    st.floats(-1e3, 1e3),
    st.lists(
        st.tuples(st.sampled_from(["die_temp", "speed", "od"]), st.integers(0, 3_600_000), st.floats(-1e3, 1e3)),
        min_size=1,
        max_size=80,
    ),
)
def test_converted_rollups_equal_rollups_of_converted_samples(scale, offset, rows):
    role = {"role": "die_temperature", "unit": "degC", "scale": scale, "offset": offset}
    use_case = UseCaseConfig.model_validate(config(line_taxonomy={"line-1": {"die_temp": role}}))
    samples = pd.DataFrame(rows, columns=["metric", "time_ms", "value"]).assign(time_ms=lambda f: f["time_ms"] + T0)
    via_rollups = rollups_to_roles(rollup_samples(samples, "5m"), use_case, "line-1")
    via_samples = rollup_samples(to_roles(samples, use_case, "line-1").rename(columns={"role": "metric"}), "5m")
    assert list(via_rollups["role"].astype(str)) == list(via_samples["metric"].astype(str))
    np.testing.assert_array_equal(via_rollups["count"], via_samples["count"])
    for column in ("sum", "min", "max", "sum2", "m2"):
        scale_of = np.abs(via_samples[column]).max() + 1.0
        np.testing.assert_allclose(
            via_rollups[column], via_samples[column], rtol=1e-7, atol=1e-7 * scale_of, err_msg=column
        )
