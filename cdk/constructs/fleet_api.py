"""The fleet API: an IAM-authenticated REST API over the fleet_status function (read-only queries).

GET /devices, GET /devices/{thing}/history, GET /models/{version}/why-not (functions/fleet_status).
Every method takes AWS_IAM authorization, so callers sign requests with SigV4; the "fleet readers"
managed policy grants execute-api:Invoke on this API's GET methods of its one stage and nothing
else. The function reads the tables and, for why-not, the model registry and manifests.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from edgeloop.schemas import names

from .functions import FunctionFactory
from .nag import acknowledge, wildcard_findings
from .storage import Storage

STAGE = "v1"
FUNCTION_KEY = "fleet_status"
READ_ACTIONS = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan"]
DEVICE_FILTERS = ("site", "line", "model", "status")  # functions/fleet_status/handler.py DEVICE_FILTERS
ACCESS_LOG_RETENTION = logs.RetentionDays.ONE_YEAR  # who asked what about the fleet: kept for audits
THROTTLE_RATE = 20  # requests/s: operators and dashboards, not a public API
THROTTLE_BURST = 40


class FleetApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        storage: Storage,
        factory: FunctionFactory,
        devices: dynamodb.ITable,
        deployments: dynamodb.ITable,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function = factory.create(
            self,
            FUNCTION_KEY,
            environment={
                names.DEVICE_TABLE_ENV: devices.table_name,
                names.DEPLOYMENT_TABLE_ENV: deployments.table_name,
            },
            memory_mb=512,
            timeout=Duration.seconds(29),  # API Gateway's integration timeout
            description="Fleet API: fleet status, device history and why-not queries (read-only)",
        )
        self._read_access(storage, devices, deployments)
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=ACCESS_LOG_RETENTION, removal_policy=RemovalPolicy.RETAIN
        )
        self.api = self._rest_api()
        self._routes()
        self.readers = self._readers_policy()

    def _read_access(self, storage: Storage, devices: dynamodb.ITable, deployments: dynamodb.ITable) -> None:
        for table in (devices, deployments):
            self.function.allow(
                actions=READ_ACTIONS,
                resources=[table.table_arn, f"{table.table_arn}/index/*"],
                reason="reads one edgeloop table and its own indexes (the history is read through the by_status index)",
            )
        self.function.allow(
            actions=["sagemaker:DescribeModelPackage"],
            resources=[
                f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:model-package/"
                f"{names.MODEL_PACKAGE_GROUP_PREFIX}-*/*"
            ],
            reason="why-not reads the manifest URI of a rollout's model package, any version in edgeloop's groups",
        )
        self.function.allow(
            actions=["s3:GetObject"],
            resources=[Storage.objects(storage.models, names.MODELS_PREFIX)],
            reason=f"why-not reads model manifests, only under {names.MODELS_PREFIX}/ of the model bucket",
        )

    def _rest_api(self) -> apigw.RestApi:
        api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{names.PROJECT}-fleet",
            description="edgeloop fleet queries: which device runs which model, history, why not (IAM auth)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
            ),
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
        )
        acknowledge(
            api,
            "APIG3",
            "IAM-authenticated, read-only, throttled API for operators: every request is SigV4-signed by a "
            "principal holding the fleet readers policy, so a WAF web ACL would add cost without a threat it stops",
        )
        acknowledge(
            api,
            "COG4",
            "authorization is AWS_IAM on every method (SigV4, the fleet readers managed policy), not a Cognito "
            "user pool: the callers are AWS principals (operators' roles, dashboards), not app users",
        )
        acknowledge(
            api,
            "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "the account-level role API Gateway needs to write execution logs; AWS maintains this policy for "
            "exactly that purpose",
        )
        return api

    def _routes(self) -> None:
        integration = apigw.LambdaIntegration(self.function.function, proxy=True)
        validator = self.api.add_request_validator(
            "RequestValidator",
            request_validator_name="parameters-and-body",
            validate_request_parameters=True,
            validate_request_body=True,  # GETs carry no body; cdk-nag (APIG2) asks for both checks
        )

        def get(resource: apigw.Resource, parameters: dict[str, bool]) -> None:
            resource.add_method(
                "GET",
                integration,
                authorization_type=apigw.AuthorizationType.IAM,
                request_validator=validator,
                request_parameters=parameters,
            )

        devices = self.api.root.add_resource("devices")
        get(devices, {f"method.request.querystring.{name}": False for name in DEVICE_FILTERS})
        history = devices.add_resource("{thing}").add_resource("history")
        get(history, {"method.request.path.thing": True, "method.request.querystring.limit": False})
        why_not = self.api.root.add_resource("models").add_resource("{version}").add_resource("why-not")
        get(why_not, {"method.request.path.version": True, "method.request.querystring.model_id": False})

    def _readers_policy(self) -> iam.ManagedPolicy:
        invoke_get = self.api.arn_for_execute_api(method="GET", path="/*", stage=STAGE)
        statement = iam.PolicyStatement(actions=["execute-api:Invoke"], resources=[invoke_get])
        policy = iam.ManagedPolicy(
            self,
            "FleetReadersPolicy",
            description="Query the edgeloop fleet API: GET on its routes (status, history, why-not), nothing else",
            statements=[statement],
        )
        for finding in wildcard_findings(Stack.of(self), statement.actions, statement.resources):
            acknowledge(
                policy,
                f"IAM5[{finding}]",
                "GET on every route of this one API's stage: the routes are the read-only fleet queries "
                "and thing names and versions in their paths vary",
            )
        return policy
