"""The ModelRunner recipe grants what the component uses (issue 17: context in, predictions and alerts out)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeloop.greengrass_components.model_runner.settings import settings_from_env
from edgeloop.schemas import iot_policies, names

RECIPE = Path(__file__).parents[3] / "greengrass_components" / "recipes" / f"{names.MODEL_RUNNER_COMPONENT}.yaml"


def recipe() -> dict:
    return yaml.safe_load(RECIPE.read_text())


def granted(service: str, operation: str) -> set[str]:
    policies = recipe()["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"][service].values()
    return {resource for p in policies if operation in p["operations"] for resource in p["resources"]}


def test_local_topics_are_granted_with_the_operation_the_runner_uses():
    assert granted("aws.greengrass.ipc.pubsub", "aws.greengrass#SubscribeToTopic") == {
        names.LOCAL_PUBSUB_SAMPLES_TOPIC,
        names.LOCAL_PUBSUB_CONTEXT_TOPIC,
    }
    assert granted("aws.greengrass.ipc.pubsub", "aws.greengrass#PublishToTopic") == {
        names.LOCAL_PUBSUB_SAMPLES_TOPIC,
        names.LOCAL_PUBSUB_PREDICTIONS_TOPIC,
        names.LOCAL_PUBSUB_ALERTS_TOPIC,
    }


def test_prediction_and_alert_topics_are_the_things_own():
    """Own topics: the Greengrass mqttproxy policy, the IoT policies and mosquitto's ACL allow them already."""
    (own,) = granted("aws.greengrass.ipc.mqttproxy", "aws.greengrass#PublishToIoTCore")
    for topic in (names.prediction_topic("gw-1"), names.alert_topic("gw-1")):
        assert names.topic_matches(own.replace("{iot:thingName}", "gw-1"), topic)
        assert names.thing_from_topic(topic) == "gw-1"
    arns = iot_policies.IotArns("aws", "us-east-1", "123456789012")
    (publish, _) = iot_policies.own_topic_statements(arns, "gw-1")
    assert publish["Resource"] == arns(f"topic/{names.TOPIC_ROOT}/gw-1/*")  # one level: predictions, alerts


@pytest.mark.parametrize(
    ("key", "env", "default", "field"),
    [
        (
            names.ALERT_RAISE_AFTER_CONFIG_KEY,
            names.ALERT_RAISE_AFTER_ENV,
            names.DEFAULT_ALERT_RAISE_AFTER,
            "alert_raise_after",
        ),
        (
            names.ALERT_CLEAR_AFTER_CONFIG_KEY,
            names.ALERT_CLEAR_AFTER_ENV,
            names.DEFAULT_ALERT_CLEAR_AFTER,
            "alert_clear_after",
        ),
    ],
)
def test_alert_counts_are_configurable_with_the_code_default(key, env, default, field, tmp_path):
    document = recipe()
    assert int(document["ComponentConfiguration"]["DefaultConfiguration"][key]) == default
    for manifest in document["Manifests"]:
        assert manifest["Lifecycle"]["setEnv"][env] == f"{{configuration:/{key}}}"
    base = {
        names.THING_NAME_ENV: "gw-1",
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
    }
    assert getattr(settings_from_env({**base, env: ""}), field) == default
    assert getattr(settings_from_env({**base, env: "5"}), field) == 5
    with pytest.raises(ValueError, match=f"{env}='0'"):
        settings_from_env({**base, env: "0"})


def test_the_prediction_flush_latency_is_configurable_with_the_code_default(tmp_path):
    key, env = names.PREDICTION_FLUSH_MAX_LATENCY_CONFIG_KEY, names.PREDICTION_FLUSH_MAX_LATENCY_S_ENV
    document = recipe()
    default = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S
    assert float(document["ComponentConfiguration"]["DefaultConfiguration"][key]) == default
    for manifest in document["Manifests"]:
        assert manifest["Lifecycle"]["setEnv"][env] == f"{{configuration:/{key}}}"
    base = {
        names.THING_NAME_ENV: "gw-1",
        names.WORK_DIR_ENV: str(tmp_path),
        names.LINE_ID_ENV: "line-1",
        names.USE_CASE_ENV: "extrusion",
    }
    assert settings_from_env({**base, env: ""}).prediction_flush_max_latency_s == default
    assert settings_from_env({**base, env: "0"}).prediction_flush_max_latency_s == 0, "0: each prediction at once"
    assert settings_from_env({**base, env: "60"}).prediction_flush_max_latency_s == 60
    with pytest.raises(ValueError, match=f"{env}='-1'"):
        settings_from_env({**base, env: "-1"})
