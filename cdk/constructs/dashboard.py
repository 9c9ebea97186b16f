"""One CloudWatch dashboard per use case (cdk-monitoring-constructs): the loop in the field at a glance.

Rows: violation alerts (raised, cleared, notices sent and suppressed), live accuracy (the rounds' worst and
median ratios against the use case's thresholds, lines and windows judged, degraded lines and retraining
starts; a Logs Insights table of the newest window per line and model version and one of degraded windows,
read from the live accuracy function's log records), ingest volume and lag, quarantine counts, fleet status.
Every graphed figure is an EMF metric a function emits (namespace names.PROJECT, dimension `service` = the
function's key; DASHBOARD_METRICS lists them and a test finds each in its function's code). With the use
case's monitoring.line_metrics (read here at synth, as the function reads it at run time), also graphs per
line and model version, drawn with SEARCH expressions, so lines added later appear by themselves.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from cdk_monitoring_constructs import (
    AlarmFactoryDefaults,
    CustomMetricGroup,
    DefaultDashboardFactory,
    MetricFactoryDefaults,
    MonitoringFacade,
)
from constructs import Construct

from edgeloop.schemas import names
from edgeloop.schemas.monitoring import (
    LIVE_ACCURACY_METRICS,
    LIVE_ACCURACY_ROUND_METRICS,
    LIVE_ACCURACY_SERVICE,
    LIVE_ACCURACY_WINDOW_RECORD,
)
from edgeloop.schemas.use_case import UseCaseConfig

from .live_accuracy import degraded_lines_metric

FIVE_MINUTES, HOUR = Duration.minutes(5), Duration.hours(1)
# service (function key) -> the EMF metrics of it this dashboard draws
DASHBOARD_METRICS: dict[str, tuple[str, ...]] = {
    "predictions": (
        "AlertsRaised",
        "AlertsCleared",
        "AlertNoticesSent",
        "AlertNoticesSuppressed",
        "PredictionsLanded",
        "MessagesQuarantined",
    ),
    LIVE_ACCURACY_SERVICE: (*LIVE_ACCURACY_ROUND_METRICS, "DegradedLines"),
    "retraining": ("RetrainingStarted", "RetrainingHeld"),
    "ingest": ("SamplesLanded", "BatchesLanded", "SamplesQuarantined", "BatchesQuarantined"),
    "compaction": ("IngestionDelayP50Seconds", "IngestionDelayP99Seconds", "IngestionDelayMaxSeconds", "LateRows"),
    "context": ("ContextIntervalsRefused",),
    "status_intake": ("StatusReportsRecorded", "StatusReportsRefused", "PeriodicStatusReceived"),
    "device_registry": ("DevicesRegistered", "DevicesEnrolled", "AnnouncementsRefused"),
    "wave_controller": ("DevicesMarkedOffline", "RolloutsAdvanced", "RolloutAdvanceErrors"),
    "orchestrator": ("DevicesTargeted", "DevicesExcluded", "DevicesRolledBack"),
}
# the Logs Insights tables' columns (of LIVE_ACCURACY_RECORD_FIELDS: a test checks)
WINDOW_TABLE_FIELDS = (
    "line_id",
    "model_version",
    "window_start",
    "status",
    "joined",
    "rmse",
    "persistence_rmse",
    "rmse_ratio_vs_persistence",
    "rmse_ratio_vs_registration",
    "violation_precision",
    "violation_recall",
    "lead_time_median_s",
)
DEGRADED_TABLE_FIELDS = ("line_id", "model_version", "window_start", "rmse_ratio_vs_persistence", "reasons")
WINDOW_TABLE_ROWS = 500  # newest (line, version) pairs shown; the rest by narrowing the query in the console


def dashboard_name(use_case: str) -> str:
    """CloudWatch allows letters, digits, - and _ (at most 255)."""
    return f"{names.PROJECT}-{use_case}".replace("_", "-")


def service_metric(service: str, name: str, *, statistic: str = "Sum", period: Duration = FIVE_MINUTES, label=None):
    if name not in DASHBOARD_METRICS[service]:
        raise ValueError(f"metric {name!r} of service {service!r} is not in DASHBOARD_METRICS[{service!r}]")
    return cloudwatch.Metric(
        namespace=names.PROJECT,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=period,
        label=label or name,
    )


def per_model_version(name: str, statistic: str = "Average") -> cloudwatch.MathExpression:
    """Every (line, model version) series of a live accuracy metric, labelled by both (line_metrics only)."""
    if name not in LIVE_ACCURACY_METRICS:
        raise ValueError(f"metric {name!r} is not in LIVE_ACCURACY_METRICS {LIVE_ACCURACY_METRICS}")
    schema = f"{{{names.PROJECT},service,line_id,model_version}}"
    query = f'{schema} service="{LIVE_ACCURACY_SERVICE}" MetricName="{name}"'
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{query}', '{statistic}', {int(HOUR.to_seconds())})",
        using_metrics={},
        label=f"{name} ${{PROP('Dim.line_id')}} ${{PROP('Dim.model_version')}}",
        period=HOUR,
    )


def newest_windows_query() -> list[str]:
    """Logs Insights: the newest window record of each (line, model version) (dedup keeps the first in order)."""
    return [
        f'filter record = "{LIVE_ACCURACY_WINDOW_RECORD}"',
        f"fields {', '.join(WINDOW_TABLE_FIELDS)}",
        "sort window_start desc",
        "dedup line_id, model_version",
        f"limit {WINDOW_TABLE_ROWS}",  # the one command allowed after dedup
    ]


def degraded_windows_query() -> list[str]:
    """Logs Insights: degraded windows, newest first, with the reasons."""
    return [
        f'filter record = "{LIVE_ACCURACY_WINDOW_RECORD}" and status = "degraded"',
        f"fields {', '.join(DEGRADED_TABLE_FIELDS)}",
        "sort window_start desc",
        f"limit {WINDOW_TABLE_ROWS}",
    ]


def window_table(log_group: logs.ILogGroup, title: str, query: list[str]) -> cloudwatch.LogQueryWidget:
    return cloudwatch.LogQueryWidget(
        log_group_names=[log_group.log_group_name],
        query_lines=query,
        view=cloudwatch.LogQueryVisualizationType.TABLE,
        title=title,
        width=24,
        height=8,
    )


def _threshold(value: float, label: str) -> cloudwatch.HorizontalAnnotation:
    return cloudwatch.HorizontalAnnotation(value=value, label=label, color="#d62728")


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        use_case: UseCaseConfig,
        alert_topic: sns.ITopic,
        live_accuracy_log_group: logs.ILogGroup,
    ):
        super().__init__(scope, construct_id)
        self.live_accuracy_log_group = live_accuracy_log_group
        self.name = dashboard_name(use_case.use_case)
        self.facade = MonitoringFacade(
            self,
            "Facade",
            # the facade creates no alarms here (constructs/monitoring.py owns them); the prefix is required
            alarm_factory_defaults=AlarmFactoryDefaults(actions_enabled=False, alarm_name_prefix=self.name),
            metric_factory_defaults=MetricFactoryDefaults(namespace=names.PROJECT, period=FIVE_MINUTES),
            dashboard_factory=DefaultDashboardFactory(
                self,
                "Dashboards",
                dashboard_name_prefix=self.name,
                create_dashboard=True,
                create_summary_dashboard=False,
                create_alarm_dashboard=False,
                detail_dashboard_range=Duration.days(7),
            ),
        )
        self.facade.add_large_header(f"edgeloop {use_case.use_case}: the loop in the field")
        self._alerts(alert_topic)
        self._live_accuracy(use_case)
        if use_case.monitoring.line_metrics:
            self._line_metrics(use_case)
        self._data_path()
        self._fleet()

    def _section(self, title: str, groups: list[CustomMetricGroup]) -> None:
        self.facade.monitor_custom(human_readable_name=title, alarm_friendly_name=title, metric_groups=groups)

    def _alerts(self, alert_topic: sns.ITopic) -> None:
        def predictions(name: str) -> cloudwatch.Metric:
            return service_metric("predictions", name)

        self._section(
            "Violation alerts",
            [
                CustomMetricGroup(
                    title="Alerts raised and cleared",
                    metrics=[predictions("AlertsRaised"), predictions("AlertsCleared")],
                ),
                CustomMetricGroup(
                    title="Alert notices (SNS)",
                    metrics=[
                        predictions("AlertNoticesSent"),
                        predictions("AlertNoticesSuppressed"),
                        alert_topic.metric_number_of_notifications_failed(
                            period=FIVE_MINUTES, label="NotificationsFailed"
                        ),
                    ],
                ),
            ],
        )

    def _live_accuracy(self, use_case: UseCaseConfig) -> None:
        monitoring = use_case.monitoring

        def round_metric(name: str, statistic: str) -> cloudwatch.Metric:
            return service_metric(LIVE_ACCURACY_SERVICE, name, statistic=statistic, period=HOUR)

        self._section(
            "Live accuracy (all lines, per hourly round)",
            [
                CustomMetricGroup(
                    title="Live RMSE / persistence RMSE: worst and median window",
                    metrics=[
                        round_metric("WorstRmseRatioVsPersistence", "Maximum"),
                        round_metric("MedianRmseRatioVsPersistence", "Average"),
                    ],
                    horizontal_annotations=[
                        _threshold(monitoring.max_rmse_ratio_vs_persistence, "max_rmse_ratio_vs_persistence")
                    ],
                ),
                CustomMetricGroup(
                    title="Live RMSE / registered RMSE: worst window",
                    metrics=[round_metric("WorstRmseRatioVsRegistration", "Maximum")],
                    horizontal_annotations=[
                        _threshold(monitoring.max_rmse_ratio_vs_registration, "max_rmse_ratio_vs_registration")
                    ],
                ),
                CustomMetricGroup(
                    title="Lines and windows judged, windows degraded",
                    metrics=[
                        round_metric("LinesJudged", "Sum"),
                        round_metric("WindowsJudged", "Sum"),
                        round_metric("WindowsDegraded", "Sum"),
                        round_metric("PredictionsJoined", "Sum"),
                    ],
                ),
                CustomMetricGroup(
                    title="Degraded lines and retraining starts",
                    metrics=[
                        degraded_lines_metric(),
                        service_metric("retraining", "RetrainingStarted", period=HOUR),
                        service_metric("retraining", "RetrainingHeld", period=HOUR),
                    ],
                ),
            ],
        )
        log_group = self.live_accuracy_log_group
        self.facade.add_widget(
            window_table(log_group, "Newest live accuracy window per line and model version", newest_windows_query())
        )
        self.facade.add_widget(window_table(log_group, "Degraded windows, newest first", degraded_windows_query()))

    def _line_metrics(self, use_case: UseCaseConfig) -> None:
        monitoring = use_case.monitoring
        self._section(
            "Live accuracy per line and model version (monitoring.line_metrics)",
            [
                CustomMetricGroup(
                    title="Live RMSE vs persistence's",
                    metrics=[per_model_version("LiveRmse"), per_model_version("PersistenceRmse")],
                ),
                CustomMetricGroup(
                    title="Live RMSE / registered RMSE",
                    metrics=[per_model_version("LiveRmseRatioVsRegistration")],
                    horizontal_annotations=[
                        _threshold(monitoring.max_rmse_ratio_vs_registration, "max_rmse_ratio_vs_registration")
                    ],
                ),
                CustomMetricGroup(
                    title="Live RMSE / persistence RMSE",
                    metrics=[per_model_version("LiveRmseRatioVsPersistence")],
                    horizontal_annotations=[
                        _threshold(monitoring.max_rmse_ratio_vs_persistence, "max_rmse_ratio_vs_persistence")
                    ],
                ),
                CustomMetricGroup(
                    title="Violation precision and recall",
                    metrics=[per_model_version("LiveViolationPrecision"), per_model_version("LiveViolationRecall")],
                ),
            ],
        )

    def _data_path(self) -> None:
        self._section(
            "Ingest and quarantine",
            [
                CustomMetricGroup(
                    title="Ingest volume",
                    metrics=[
                        service_metric("ingest", "SamplesLanded"),
                        service_metric("ingest", "BatchesLanded"),
                        service_metric("predictions", "PredictionsLanded"),
                    ],
                ),
                CustomMetricGroup(
                    title="Ingestion lag (event time -> curated, seconds)",
                    metrics=[
                        service_metric("compaction", name, statistic="Maximum", period=HOUR)
                        for name in ("IngestionDelayP50Seconds", "IngestionDelayP99Seconds", "IngestionDelayMaxSeconds")
                    ],
                ),
                CustomMetricGroup(
                    title="Quarantined and late",
                    metrics=[
                        service_metric("ingest", "SamplesQuarantined"),
                        service_metric("ingest", "BatchesQuarantined"),
                        service_metric("predictions", "MessagesQuarantined"),
                        service_metric("context", "ContextIntervalsRefused"),
                        service_metric("compaction", "LateRows"),
                    ],
                ),
            ],
        )

    def _fleet(self) -> None:
        self._section(
            "Fleet status",
            [
                CustomMetricGroup(
                    title="Status reports and devices",
                    metrics=[
                        service_metric("status_intake", "StatusReportsRecorded"),
                        service_metric("status_intake", "PeriodicStatusReceived"),
                        service_metric("status_intake", "StatusReportsRefused"),
                        service_metric("device_registry", "DevicesRegistered"),
                        service_metric("device_registry", "AnnouncementsRefused"),
                        service_metric("wave_controller", "DevicesMarkedOffline"),
                    ],
                ),
                CustomMetricGroup(
                    title="Rollouts",
                    metrics=[
                        service_metric("orchestrator", "DevicesTargeted"),
                        service_metric("orchestrator", "DevicesExcluded"),
                        service_metric("device_registry", "DevicesEnrolled"),
                        service_metric("wave_controller", "RolloutsAdvanced"),
                        service_metric("wave_controller", "RolloutAdvanceErrors"),
                        service_metric("orchestrator", "DevicesRolledBack"),
                    ],
                ),
            ],
        )
