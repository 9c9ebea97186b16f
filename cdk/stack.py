"""EdgeloopStack: storage, the data path, IoT routing, the fleet, training, and their alarms, wired together."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from edgeloop.schemas import names
from edgeloop.schemas.use_case import resolve_use_case

from .constructs.alerts import Alerts
from .constructs.catalog import Catalog
from .constructs.components import GreengrassComponents
from .constructs.config import StackConfig, compaction_interval_minutes
from .constructs.dashboard import Dashboard
from .constructs.fleet import Fleet
from .constructs.fleet_api import FleetApi
from .constructs.functions import FunctionFactory
from .constructs.hot_path import HotPath
from .constructs.ingestion import Ingestion
from .constructs.iot import IotRouting
from .constructs.layers import PublicLayers
from .constructs.live_accuracy import LiveAccuracy
from .constructs.monitoring import Monitoring
from .constructs.retraining import Retraining
from .constructs.storage import Storage
from .constructs.training import Training
from .lambda_asset import PACKAGED_USE_CASE_PATH


class EdgeloopStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: StackConfig, lambda_asset: Path, **kwargs
    ) -> None:
        super().__init__(
            scope, construct_id, description="edgeloop: closes the ML loop between factory gateways and AWS", **kwargs
        )
        self.config = config
        self.storage = Storage(self, "Storage")
        self.monitoring = Monitoring(self, "Monitoring")
        factory = FunctionFactory.from_asset(
            lambda_asset, layers=PublicLayers(self, "Layers"), monitoring=self.monitoring
        )
        self.ingestion = Ingestion(
            self,
            "Ingestion",
            storage=self.storage,
            factory=factory,
            use_case=config.use_case,
            lateness_sla_days=config.lateness_sla_days,
            use_case_file=PACKAGED_USE_CASE_PATH if config.use_case_file else None,
        )
        self.fleet = Fleet(
            self,
            "Fleet",
            storage=self.storage,
            factory=factory,
            gateway_component_version=config.gateway_component_version,
            model_runner_component_version=config.model_runner_component_version,
            rollout_policy=config.rollout_policy,
        )
        self.functions = {
            f.key: f
            for f in (
                self.ingestion.ingest,
                self.ingestion.compaction,
                self.ingestion.metric_packer,
                self.ingestion.rollups,
                self.ingestion.context,
                self.ingestion.predictions,
                self.fleet.device_registry,
                self.fleet.status_intake,
                self.fleet.orchestrator,
            )
        }
        self.fleet_api = FleetApi(
            self,
            "FleetApi",
            storage=self.storage,
            factory=factory,
            devices=self.fleet.devices,
            deployments=self.fleet.deployments,
        )
        self.functions[self.fleet_api.function.key] = self.fleet_api.function
        self.iot = IotRouting(
            self,
            "Iot",
            storage=self.storage,
            route_targets={key: f.function for key, f in self.functions.items()},
            route_queues={"ingest": self.ingestion.telemetry_queue, "predictions": self.ingestion.predictions_queue},
        )
        # Both Greengrass components published at the package version, and their continuous
        # deployment to the gateways' thing group; zips staged beside the Lambda asset.
        self.components = GreengrassComponents(
            self,
            "Components",
            version=config.component_version,
            staging_dir=lambda_asset.parent,
            artifact_reader=self.iot.token_exchange_role,
        )
        self.catalog = Catalog(self, "Catalog", storage=self.storage)
        self.training = Training(
            self,
            "Training",
            storage=self.storage,
            use_case=config.use_case,
            packaged_use_case=config.packaged_use_case,
            line_ids=config.line_ids,
            signing_key_secret_arn=config.model_signing_key_secret_arn,
        )
        self._field_monitoring(config, factory)
        # The optional Timestream hot path: none of it is synthesized unless edgeloop:enableTimestream is set.
        self.hot_path = (
            HotPath(
                self,
                "HotPath",
                storage=self.storage,
                factory=factory,
                memory_retention_hours=config.timestream_memory_retention_hours,
                magnetic_retention_days=config.timestream_magnetic_retention_days,
            )
            if config.enable_timestream
            else None
        )
        self._outputs()

    def _field_monitoring(self, config: StackConfig, factory: FunctionFactory) -> None:
        """Issue 17: alerts passed on, live accuracy, retraining, and the use case's dashboard."""
        use_case_environment = {names.USE_CASE_ENV: config.use_case}
        if config.use_case_file:
            use_case_environment[names.USE_CASE_FILE_ENV] = PACKAGED_USE_CASE_PATH
        self.alerts = Alerts(self, "Alerts", monitoring=self.monitoring, predictions=self.ingestion.predictions)
        self.live_accuracy = LiveAccuracy(
            self,
            "LiveAccuracy",
            storage=self.storage,
            factory=factory,
            use_case=config.use_case,
            use_case_environment=use_case_environment,
            compaction_interval_minutes=compaction_interval_minutes(self.node.try_get_context),
        )
        self.retraining = Retraining(
            self,
            "Retraining",
            factory=factory,
            table=self.alerts.table,
            use_case_environment=use_case_environment,
            line_ids=config.line_ids,
            pipeline_name=self.training.pipeline_name,
        )
        for function in (self.live_accuracy.function, self.retraining.function):
            self.functions[function.key] = function
        use_case = config.packaged_use_case or resolve_use_case(config.use_case, environ={})
        self.dashboard = Dashboard(
            self,
            "Dashboard",
            use_case=use_case,
            alert_topic=self.alerts.topic,
            live_accuracy_log_group=self.live_accuracy.function.log_group,
        )

    def _outputs(self) -> None:
        outputs = {
            "DataBucketName": self.storage.data.bucket_name,
            "ModelBucketName": self.storage.models.bucket_name,
            "DeviceTableName": self.fleet.devices.table_name,
            "DeploymentTableName": self.fleet.deployments.table_name,
            "FleetApiUrl": self.fleet_api.api.url,
            "FleetReadersPolicyArn": self.fleet_api.readers.managed_policy_arn,
            "AlarmTopicArn": self.monitoring.topic.topic_arn,
            "AlertTopicArn": self.alerts.topic.topic_arn,
            "MonitoringTableName": self.alerts.table.table_name,
            "DashboardName": self.dashboard.name,
            "GatewayRoleAlias": self.iot.role_alias.role_alias,
            "GatewayDataPolicyName": self.iot.data_policy.ref,
            "GreengrassCorePolicyName": self.iot.greengrass_policy.ref,
            "GreengrassGatewaysThingGroupName": names.GREENGRASS_GATEWAYS_THING_GROUP,
            "GreengrassComponentVersion": self.components.version,
            "AthenaWorkgroupName": self.catalog.workgroup_name,
            "GlueDatabaseName": self.catalog.database_name,
            "QueryUsersPolicyArn": self.catalog.query_users.managed_policy_arn,
            "PipelineName": self.training.pipeline_name,
            "PipelineRoleArn": self.training.role.role_arn,
            "DataScientistPolicyArn": self.training.data_scientists.managed_policy_arn,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        # Lines without a group yet get one from the pipeline's register step on their first run.
        CfnOutput(
            self,
            "ModelPackageGroupNames",
            value=",".join(self.training.group_names) or "none",
            description="Model Package Groups created for edgeloop:lineIds (comma-separated; 'none' if no line is "
            "configured: the register step creates a line's group on its first run)",
        )
