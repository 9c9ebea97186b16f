"""Stack settings from CDK context: defaults, the Timestream flag, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop import __version__ as PACKAGE_VERSION
from edgeloop.cdk.constructs.config import (
    COMPACTION_INTERVAL_KEY,
    ENABLE_TIMESTREAM_KEY,
    GATEWAY_VERSION_KEY,
    LATENESS_SLA_KEY,
    MODEL_RUNNER_VERSION_KEY,
    PANDAS_LAYER_VERSION_KEY,
    ROLLOUT_POLICY_KEYS,
    USE_CASE_FILE_KEY,
    USE_CASE_KEY,
    ConfigError,
    StackConfig,
)
from edgeloop.schemas import RolloutPolicy, names
from edgeloop.schemas.use_case import USE_CASES_DIR, load_use_case_file


def config(**context) -> StackConfig:
    return StackConfig.from_context(context.get)


def test_defaults():
    assert config() == StackConfig(
        use_case="extrusion",
        component_version=PACKAGE_VERSION,
    )
    assert config().gateway_component_version == config().model_runner_component_version == PACKAGE_VERSION


def test_values_from_cli_context_arrive_as_strings():
    parsed = config(
        **{
            ENABLE_TIMESTREAM_KEY: "false",
            LATENESS_SLA_KEY: "21",
        }
    )
    assert parsed.lateness_sla_days == 21


@pytest.mark.parametrize("value", [True, "true", "True", "1"])
def test_timestream_hot_path_is_accepted(value):
    """Built by constructs/hot_path.py; tests/infrastructure/test_cdk_hot_path.py synthesizes it."""
    assert config(**{ENABLE_TIMESTREAM_KEY: value}).enable_timestream is True
    assert config().enable_timestream is False


@pytest.mark.parametrize(
    "key, value",
    [
        (ENABLE_TIMESTREAM_KEY, "maybe"),
        (USE_CASE_KEY, "no_such_use_case"),
        (USE_CASE_KEY, "Bad Name"),
        (GATEWAY_VERSION_KEY, "latest"),
        (GATEWAY_VERSION_KEY, "2.3.1"),
        (MODEL_RUNNER_VERSION_KEY, "1.0.0"),
        (PANDAS_LAYER_VERSION_KEY, "26"),
        (LATENESS_SLA_KEY, "0"),
        (LATENESS_SLA_KEY, "two weeks"),
        (COMPACTION_INTERVAL_KEY, "4"),
        (COMPACTION_INTERVAL_KEY, "1441"),
        (COMPACTION_INTERVAL_KEY, "hourly"),
    ],
)
def test_bad_context_names_the_key_and_the_value(key, value):
    with pytest.raises(ConfigError) as raised:
        config(**{key: value})
    assert key in str(raised.value) and value in str(raised.value)


def test_compaction_runs_hourly_unless_context_sets_5_to_1440_minutes():
    assert config().compaction_interval_minutes == 60
    assert config(**{COMPACTION_INTERVAL_KEY: "15"}).compaction_interval_minutes == 15
    assert config(**{COMPACTION_INTERVAL_KEY: 1440}).compaction_interval_minutes == 1440
    with pytest.raises(ConfigError, match=f"{COMPACTION_INTERVAL_KEY}='4' must be between 5 and 1440"):
        config(**{COMPACTION_INTERVAL_KEY: "4"})


def test_the_compaction_schedule_is_a_rate_of_the_interval():
    from edgeloop.cdk.constructs.ingestion import compaction_schedule

    assert compaction_schedule(15).expression_string == "rate(15 minutes)"
    assert compaction_schedule(60).expression_string == "rate(1 hour)"


def test_component_versions_are_the_package_version_only():
    """The stack publishes the components at the package version; a context pin may only repeat it."""
    assert config(**{GATEWAY_VERSION_KEY: PACKAGE_VERSION}).component_version == PACKAGE_VERSION
    with pytest.raises(ConfigError, match="package version"):
        config(**{MODEL_RUNNER_VERSION_KEY: "9.9.9"})


def test_the_app_refuses_bad_context_before_building_anything(tmp_path):
    from edgeloop.cdk.app import build_app

    with pytest.raises(ConfigError, match=ENABLE_TIMESTREAM_KEY):
        build_app(
            context={ENABLE_TIMESTREAM_KEY: "maybe"}, outdir=str(tmp_path / "out"), staging_dir=tmp_path / "stage"
        )
    assert not (tmp_path / "stage").exists()


def test_the_stack_names_its_use_case_and_the_functions_have_no_default():
    from edgeloop.cloud.settings import DataPathSettings

    assert config().use_case == names.DEFAULT_USE_CASE and config().use_case_file == ""
    assert config().packaged_use_case is None
    with pytest.raises(ValueError) as raised:
        DataPathSettings.from_env({names.DATA_BUCKET_ENV: "data-bucket"})
    assert names.USE_CASE_ENV in str(raised.value) and names.USE_CASE_FILE_ENV in str(raised.value)


def _use_case_file(tmp_path, name: str = "byo_line", **changes) -> Path:
    import yaml

    document = yaml.safe_load((USE_CASES_DIR / "injection_molding.yaml").read_text())
    document.update(use_case=name, **changes)
    path = tmp_path / "my line.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_use_case_file_from_context_names_the_use_case(tmp_path, monkeypatch):
    path = _use_case_file(tmp_path)
    monkeypatch.chdir(tmp_path)  # a relative path is relative to where cdk runs
    parsed = config(**{USE_CASE_FILE_KEY: path.name})
    assert parsed.use_case == "byo_line" and parsed.use_case_file == str(path.resolve())
    assert parsed.packaged_use_case == load_use_case_file(path)
    assert config(**{USE_CASE_FILE_KEY: str(path), USE_CASE_KEY: "byo_line"}).use_case == "byo_line"


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"target_metric": "no_such_metric"}, "target_metric"),
        ({"sample_period_s": "fast"}, "sample_period_s"),
        ({"metrics": None}, "metrics"),
    ],
)
def test_an_invalid_use_case_file_fails_the_config_naming_the_key_file_and_field(tmp_path, changes, named):
    path = _use_case_file(tmp_path, **changes)
    with pytest.raises(ConfigError) as raised:
        config(**{USE_CASE_FILE_KEY: str(path)})
    message = str(raised.value)
    assert USE_CASE_FILE_KEY in message and str(path) in message and named in message


def test_a_missing_or_disagreeing_use_case_file_fails_the_config(tmp_path):
    with pytest.raises(ConfigError, match=f"{USE_CASE_FILE_KEY}=.*nowhere.yaml.*no such file"):
        config(**{USE_CASE_FILE_KEY: str(tmp_path / "nowhere.yaml")})
    with pytest.raises(ConfigError, match=f"{USE_CASE_KEY}='extrusion' but {USE_CASE_FILE_KEY}=.*'byo_line'"):
        config(**{USE_CASE_FILE_KEY: str(_use_case_file(tmp_path)), USE_CASE_KEY: "extrusion"})


def test_the_rollout_policy_from_context_keys():
    assert set(ROLLOUT_POLICY_KEYS) == set(RolloutPolicy.model_fields)
    assert config().rollout_policy == RolloutPolicy()
    parsed = config(
        **{
            "edgeloop:canaryShare": "0.5",
            "edgeloop:failureThreshold": 0,
            "edgeloop:rolloutTimeoutSeconds": "7200",
            "edgeloop:waveTimeoutSeconds": 300,
            "edgeloop:offlineSilenceSeconds": "120.5",
        }
    )
    assert parsed.rollout_policy == RolloutPolicy(
        canary_share=0.5, failure_threshold=0.0, rollout_timeout_s=7200, wave_timeout_s=300, offline_silence_s=120.5
    )


@pytest.mark.parametrize(
    "key, value",
    [
        ("edgeloop:canaryShare", "0"),
        ("edgeloop:canaryShare", "1.5"),
        ("edgeloop:canaryShare", "most"),
        ("edgeloop:failureThreshold", "-0.1"),
        ("edgeloop:failureThreshold", True),
        ("edgeloop:rolloutTimeoutSeconds", "an hour"),
        ("edgeloop:rolloutTimeoutSeconds", "90.5"),
        ("edgeloop:waveTimeoutSeconds", "0"),
        ("edgeloop:offlineSilenceSeconds", "-60"),
    ],
)
def test_a_bad_rollout_setting_names_the_key_and_the_value(key, value):
    with pytest.raises(ConfigError) as raised:
        config(**{key: value})
    assert f"{key}={value!r}" in str(raised.value)
