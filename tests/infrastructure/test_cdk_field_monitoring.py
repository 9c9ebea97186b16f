"""Issue 17's cloud side in the stack: the monitoring table, the alert topic, the notifier's grants, live
accuracy and retraining (functions, schedules, rules, least privilege), the DegradedLines alarm and the
use case's dashboard. Synthesized once, with two configured lines, and cdk-nag's AWS Solutions checks
(an unacknowledged finding makes Template.from_stack raise)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgeloop.schemas import names
from edgeloop.schemas.monitoring import (
    DEGRADED_LINES_METRIC,
    LIVE_ACCURACY_METRICS,
    LIVE_ACCURACY_RECORD_FIELDS,
    LIVE_ACCURACY_SERVICE,
)

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
LINES = ["line-1", "line_2"]
EVENT_BUS = ':events:", {"Ref": "AWS::Region"}, ":", {"Ref": "AWS::AccountId"}, ":event-bus/default"'


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    from aws_cdk.assertions import Template

    from edgeloop.cdk.app import build_app

    _, stack = build_app(
        context={"edgeloop:lineIds": ",".join(LINES)},
        outdir=str(tmp_path_factory.mktemp("cdk-out")),
        staging_dir=tmp_path_factory.mktemp("lambda-staging"),
    )
    return Template.from_stack(stack).to_json()["Resources"]


def of_type(resources: dict, cfn_type: str) -> dict:
    return {logical_id: r["Properties"] for logical_id, r in resources.items() if r["Type"] == cfn_type}


def function(resources: dict, key: str) -> tuple[str, dict]:
    (found,) = [
        (i, p) for i, p in of_type(resources, "AWS::Lambda::Function").items() if p["Handler"] == names.FUNCTIONS[key]
    ]
    return found


def grants(resources: dict, key: str) -> list[dict]:
    """The statements of the function's role, each with its actions as a list."""
    role_id = function(resources, key)[1]["Role"]["Fn::GetAtt"][0]
    found = []
    for props in of_type(resources, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in props["Roles"]:
            for statement in props["PolicyDocument"]["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                found.append({**statement, "Action": actions})
    return found


def statement_of(resources: dict, key: str, action: str) -> dict:
    (statement,) = [s for s in grants(resources, key) if action in s["Action"]]
    return statement


def monitoring_table_id(resources: dict) -> str:
    (table_id,) = [i for i in of_type(resources, "AWS::DynamoDB::Table") if "MonitoringTable" in i]
    return table_id


# --- the table and the topic ----------------------------------------------------------------------


def test_monitoring_table_expires_items_recovers_and_is_encrypted(resources):
    table = of_type(resources, "AWS::DynamoDB::Table")[monitoring_table_id(resources)]
    assert table["TimeToLiveSpecification"] == {"AttributeName": names.MONITORING_TABLE_TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert resources[monitoring_table_id(resources)]["DeletionPolicy"] == "Retain"


def test_alert_topic_is_ssl_only_and_its_failed_notices_raise_an_alarm_on_the_alarm_topic(resources):
    topics = of_type(resources, "AWS::SNS::Topic")
    (alert_id,) = [i for i, t in topics.items() if t["DisplayName"] == "edgeloop violation alerts"]
    (alarm_topic_id,) = [i for i in topics if i != alert_id]
    (policy,) = [p for p in of_type(resources, "AWS::SNS::TopicPolicy").values() if {"Ref": alert_id} in p["Topics"]]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy["PolicyDocument"]["Statement"]
    )
    (alarm,) = [
        a
        for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a.get("MetricName") == "NumberOfNotificationsFailed"
    ]
    assert alarm["Namespace"] == "AWS/SNS" and alarm["Dimensions"][0]["Value"]["Fn::GetAtt"][0] == alert_id
    assert alarm["AlarmActions"] == [{"Ref": alarm_topic_id}]


# --- the notifier (functions/predictions) ---------------------------------------------------------


def test_the_notifier_may_put_alert_events_publish_notices_and_update_only_alert_notice_items(resources):
    events = statement_of(resources, "predictions", "events:PutEvents")
    assert EVENT_BUS in json.dumps(events["Resource"])
    assert events["Condition"] == {
        "StringEquals": {"events:source": [names.EVENT_SOURCE], "events:detail-type": [names.ALERT_DETAIL_TYPE]}
    }
    table = statement_of(resources, "predictions", "dynamodb:UpdateItem")
    assert table["Action"] == ["dynamodb:UpdateItem"]
    assert table["Resource"] == {"Fn::GetAtt": [monitoring_table_id(resources), "Arn"]}
    assert table["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{names.ALERT_NOTICE_KEY_PREFIX}*"]}
    }
    publish = statement_of(resources, "predictions", "sns:Publish")
    assert "AlertTopic" in publish["Resource"]["Ref"]
    kms = statement_of(resources, "predictions", "kms:Decrypt")
    assert sorted(kms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"] and "AlarmTopicKey" in json.dumps(kms)
    variables = function(resources, "predictions")[1]["Environment"]["Variables"]
    assert variables[names.ALERT_TOPIC_ARN_ENV] == publish["Resource"]
    assert variables[names.MONITORING_TABLE_ENV] == {"Ref": monitoring_table_id(resources)}
    assert variables[names.EVENT_BUS_ENV] == "default"


# --- live accuracy ----------------------------------------------------------------------------------


def _schedule_of(resources: dict, key: str) -> list[dict]:
    function_id = function(resources, key)[0]
    return [
        rule
        for rule in of_type(resources, "AWS::Events::Rule").values()
        if any(t["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]} for t in rule["Targets"])
    ]


def test_live_accuracy_runs_hourly_reads_its_prefixes_and_writes_only_monitoring(resources):
    (rule,) = _schedule_of(resources, "live_accuracy")
    assert rule["ScheduleExpression"] == "rate(1 hour)" and "DeadLetterConfig" in rule["Targets"][0]
    s3 = {}
    for statement in grants(resources, "live_accuracy"):
        for action in (a for a in statement["Action"] if a.startswith("s3:")):
            resources_ = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            s3[action] = sorted(re.findall(r'"/([\w-]+)/\*"', json.dumps(resources_))) or ["bucket"]
    assert s3 == {
        "s3:ListBucket": ["bucket"],
        "s3:GetObject": sorted(
            [names.PREDICTIONS_PREFIX, names.CURATED_PREFIX, names.CONTEXT_PREFIX, names.MONITORING_PREFIX]
        ),
        "s3:PutObject": [names.MONITORING_PREFIX],
    }
    events = statement_of(resources, "live_accuracy", "events:PutEvents")
    assert events["Condition"]["StringEquals"]["events:detail-type"] == [names.MODEL_DEGRADED_DETAIL_TYPE]
    describe = statement_of(resources, "live_accuracy", "sagemaker:DescribeModelPackage")
    assert ":model-package/edgeloop-extrusion-*/*" in json.dumps(describe["Resource"])
    variables = function(resources, "live_accuracy")[1]["Environment"]["Variables"]
    assert variables[names.LANDING_DELAY_MINUTES_ENV] == "70"  # the default hourly compaction + 10 minutes


def test_the_landing_delay_covers_the_predictions_flush_when_compaction_runs_more_often():
    from edgeloop.cdk.constructs.live_accuracy import landing_delay_minutes

    flush_minutes = names.DEFAULT_PREDICTION_FLUSH_MAX_LATENCY_S / 60  # a batch held this long, then the queue
    assert landing_delay_minutes(5) > flush_minutes + 1
    assert landing_delay_minutes(5) == landing_delay_minutes(flush_minutes + 1)
    assert landing_delay_minutes(240) == 250  # compaction slower than the flush: compaction decides


def test_degraded_lines_alarm_goes_to_the_alarm_topic(resources):
    (alarm,) = [
        a for a in of_type(resources, "AWS::CloudWatch::Alarm").values() if a.get("MetricName") == DEGRADED_LINES_METRIC
    ]
    assert alarm["Namespace"] == names.PROJECT
    assert alarm["Dimensions"] == [{"Name": "service", "Value": LIVE_ACCURACY_SERVICE}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    assert alarm["Statistic"] == "Maximum" and alarm["Period"] == 3600
    assert "AlarmTopic" in alarm["AlarmActions"][0]["Ref"]


# --- retraining ------------------------------------------------------------------------------------


def test_retraining_runs_hourly_and_on_degraded_models(resources):
    rules = _schedule_of(resources, "retraining")
    assert sorted(r.get("ScheduleExpression", "pattern") for r in rules) == ["pattern", "rate(1 hour)"]
    (degraded,) = [r for r in rules if "EventPattern" in r]
    assert degraded["EventPattern"] == {
        "source": [names.EVENT_SOURCE],
        "detail-type": [names.MODEL_DEGRADED_DETAIL_TYPE],
    }
    variables = function(resources, "retraining")[1]["Environment"]["Variables"]
    assert variables[names.LINE_IDS_ENV] == ",".join(LINES)
    assert variables[names.MONITORING_TABLE_ENV] == {"Ref": monitoring_table_id(resources)}


def test_retraining_may_start_and_list_only_its_pipeline_and_touch_only_retraining_items(resources):
    pipeline = f":pipeline/{names.pipeline_name('extrusion')}"
    start = statement_of(resources, "retraining", "sagemaker:StartPipelineExecution")
    assert sorted(start["Action"]) == ["sagemaker:ListPipelineExecutions", "sagemaker:StartPipelineExecution"]
    assert json.dumps(start["Resource"]).endswith(f'{pipeline}"]]}}')
    parameters = statement_of(resources, "retraining", "sagemaker:ListPipelineParametersForExecution")
    assert json.dumps(parameters["Resource"]).endswith(f'{pipeline}/execution/*"]]}}')
    items = statement_of(resources, "retraining", "dynamodb:UpdateItem")
    assert sorted(items["Action"]) == [
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]
    assert items["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{names.RETRAINING_KEY_PREFIX}*"]}
    }
    events = statement_of(resources, "retraining", "events:PutEvents")
    assert events["Condition"]["StringEquals"] == {
        "events:source": [names.EVENT_SOURCE],
        "events:detail-type": [names.RETRAINING_DETAIL_TYPE],
    }
    assert not [s for s in grants(resources, "retraining") if any(a.startswith("s3:") for a in s["Action"])]


def test_the_retraining_grants_cover_every_call_the_function_makes():
    """Every AWS call in the retraining code has its action granted (read from the source)."""
    from edgeloop.cdk.constructs.retraining import ITEM_ACTIONS

    granted = {a.split(":")[1] for a in ITEM_ACTIONS} | {
        "StartPipelineExecution",
        "ListPipelineExecutions",
        "ListPipelineParametersForExecution",
        "PutEvents",
    }
    sources = [
        REPOSITORY / p
        for p in ("cloud/retraining_table.py", "cloud/pipeline_execution.py", "functions/retraining/logic.py")
    ]
    text = "\n".join(p.read_text() for p in sources)
    called = set(
        re.findall(r"\.(batch_get_item|update_item|put_item|delete_item|start_pipeline_execution|put_events)\(", text)
    )
    called |= set(re.findall(r'"(update_item|put_item|delete_item)"', text))
    called |= set(re.findall(r'get_paginator\("(\w+)"\)', text))
    operations = {"".join(part.capitalize() for part in call.split("_")) for call in called}
    assert operations <= granted, operations - granted


# --- dashboard ---------------------------------------------------------------------------------------


def _dashboard_body(resources: dict) -> dict:
    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    assert dashboard["DashboardName"] == "edgeloop-extrusion"
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "TOKEN" for p in parts))


def test_the_dashboard_draws_alerts_live_accuracy_ingest_quarantine_and_fleet(resources):
    from edgeloop.cdk.constructs.dashboard import DASHBOARD_METRICS

    body = _dashboard_body(resources)
    text = json.dumps(body)
    for service, metric_names in DASHBOARD_METRICS.items():
        for name in metric_names:
            assert name in text, (service, name)
    titles = [w["properties"].get("title") for w in body["widgets"] if w["type"] == "metric"]
    assert "Live RMSE / registered RMSE: worst window" in titles and "Alerts raised and cleared" in titles
    (ratio,) = [
        w for w in body["widgets"] if w["properties"].get("title") == "Live RMSE / registered RMSE: worst window"
    ]
    assert ratio["properties"]["annotations"]["horizontal"][0]["value"] == 1.5  # extrusion's threshold
    assert ratio["properties"]["metrics"] == [
        [
            names.PROJECT,
            "WorstRmseRatioVsRegistration",
            "service",
            LIVE_ACCURACY_SERVICE,
            {"stat": "Maximum", "period": 3600, "label": "WorstRmseRatioVsRegistration"},
        ]
    ]
    assert "SEARCH(" not in text  # extrusion keeps monitoring.line_metrics off: no metric per line


def test_the_dashboard_tables_query_the_live_accuracy_log_group_for_window_records(resources):
    from edgeloop.cdk.constructs.dashboard import DEGRADED_TABLE_FIELDS, WINDOW_TABLE_FIELDS

    (dashboard,) = of_type(resources, "AWS::CloudWatch::Dashboard").values()
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    log_group = function(resources, "live_accuracy")[1]["LoggingConfig"]["LogGroup"]
    assert log_group in parts  # the function's own log group names the queries' SOURCE
    logs = [w for w in _dashboard_body(resources)["widgets"] if w["type"] == "log"]
    assert [w["properties"]["title"] for w in logs] == [
        "Newest live accuracy window per line and model version",
        "Degraded windows, newest first",
    ]
    newest, degraded = (w["properties"]["query"] for w in logs)
    assert all(w["properties"]["view"] == "table" for w in logs)
    assert newest.startswith("SOURCE 'TOKEN' | filter record = \"live_accuracy_window\"")
    assert "| sort window_start desc\n| dedup line_id, model_version\n| limit 500" in newest
    assert f"| fields {', '.join(WINDOW_TABLE_FIELDS)}\n" in newest
    assert 'and status = "degraded"' in degraded and f"| fields {', '.join(DEGRADED_TABLE_FIELDS)}\n" in degraded
    assert set(WINDOW_TABLE_FIELDS) | set(DEGRADED_TABLE_FIELDS) <= set(LIVE_ACCURACY_RECORD_FIELDS)


def _bare_dashboard(line_metrics: bool) -> dict:
    """The Dashboard construct alone in a stack (no app synthesis: seconds)."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_logs as logs
    from aws_cdk import aws_sns as sns
    from aws_cdk.assertions import Template

    from edgeloop.cdk.constructs.dashboard import Dashboard
    from edgeloop.schemas import load_use_case

    use_case = load_use_case("extrusion")
    use_case = use_case.model_copy(
        update={"monitoring": use_case.monitoring.model_copy(update={"line_metrics": line_metrics})}
    )
    stack = Stack(App(), "Bare")
    group = logs.LogGroup(stack, "LiveAccuracyLogs")
    Dashboard(
        stack, "Dashboard", use_case=use_case, alert_topic=sns.Topic(stack, "Topic"), live_accuracy_log_group=group
    )
    return Template.from_stack(stack).to_json()["Resources"]


def test_with_line_metrics_the_dashboard_adds_the_search_graphs_per_line_and_version():
    body = _dashboard_body(_bare_dashboard(line_metrics=True))
    (ratio,) = [w for w in body["widgets"] if w["properties"].get("title") == "Live RMSE / registered RMSE"]
    (expression,) = [m[0]["expression"] for m in ratio["properties"]["metrics"]]
    assert expression == (
        'SEARCH(\'{edgeloop,service,line_id,model_version} service="live_accuracy" '
        "MetricName=\"LiveRmseRatioVsRegistration\"', 'Average', 3600)"
    )
    searched = set(re.findall(r'MetricName=\\"(\w+)\\"', json.dumps(body)))
    assert searched == {
        "LiveRmse",
        "PersistenceRmse",
        "LiveRmseRatioVsRegistration",
        "LiveRmseRatioVsPersistence",
        "LiveViolationPrecision",
        "LiveViolationRecall",
    }
    assert searched <= set(LIVE_ACCURACY_METRICS)
    assert len([w for w in body["widgets"] if w["type"] == "log"]) == 2  # the tables stay
    without = json.dumps(_dashboard_body(_bare_dashboard(line_metrics=False)))
    assert "SEARCH(" not in without and "WorstRmseRatioVsPersistence" in without


def test_every_dashboard_metric_is_emitted_by_its_function():
    """The names are the functions' own: each appears in functions/<service>/ (or live accuracy's schema)."""
    from edgeloop.cdk.constructs.dashboard import DASHBOARD_METRICS

    missing = []
    for service, metric_names in DASHBOARD_METRICS.items():
        code = "\n".join(p.read_text() for p in (REPOSITORY / "functions" / service).glob("*.py"))
        if service == LIVE_ACCURACY_SERVICE:
            code += (REPOSITORY / "schemas" / "monitoring.py").read_text()
        missing += [(service, name) for name in metric_names if f'"{name}"' not in code]
    assert missing == []
