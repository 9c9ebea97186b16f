"""Query layer in AWS: Glue tables over the data bucket, an Athena workgroup, a "query users" policy.

The tables come from edgeloop/query/tables.py, the same definition the local DuckDB views use.
Partitions are found by projection (`projection.*` table parameters), so no crawler or MSCK REPAIR
runs; see that module for why `line` is injected.
"""

from __future__ import annotations

from aws_cdk import Duration, Fn, Stack
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from edgeloop.query.tables import TABLES, Table
from edgeloop.schemas import names

from .nag import acknowledge, wildcard_findings
from .storage import Storage

ATHENA_ENGINE_VERSION = "Athena engine version 3"
BYTES_SCANNED_CUTOFF = 10 * 1024**3  # 10 GiB per query: a year of 10 lines' curated samples is far less
RESULTS_EXPIRY = Duration.days(30)  # results are re-creatable; the CLI reads them right away
PARQUET_FORMAT = {
    "input_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
    "output_format": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
    "serde": "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
}
ATHENA_QUERY_ACTIONS = [
    "athena:StartQueryExecution",
    "athena:GetQueryExecution",
    "athena:GetQueryResults",
    "athena:StopQueryExecution",
    "athena:GetWorkGroup",
]
GLUE_READ_ACTIONS = ["glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:GetPartition", "glue:GetPartitions"]


class Catalog(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, storage: Storage) -> None:
        super().__init__(scope, construct_id)
        self.database_name = names.GLUE_DATABASE
        self.workgroup_name = names.ATHENA_WORKGROUP
        stack = Stack.of(self)
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=stack.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=self.database_name, description="edgeloop's Parquet tables in the data bucket"
            ),
        )
        self.tables = {name: self._table(table, storage.data) for name, table in TABLES.items()}
        self.results = self._results_location(storage)
        self.workgroup = self._workgroup()
        self.query_users = self._query_users_policy(storage.data)

    def _table(self, table: Table, data: s3.IBucket) -> glue.CfnTable:
        cfn_table = glue.CfnTable(
            self,
            f"Table-{table.name}",
            catalog_id=Stack.of(self).account,
            database_name=self.database_name,
            table_input=glue.CfnTable.TableInputProperty(
                name=table.name,
                description=table.description,
                table_type="EXTERNAL_TABLE",
                parameters={"classification": "parquet", **self._projection(table, data)},
                partition_keys=[glue.CfnTable.ColumnProperty(name=p.name, type=p.type) for p in table.partitions],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    columns=[glue.CfnTable.ColumnProperty(name=c.name, type=c.type) for c in table.columns],
                    location=_sub_location(table.location("s3://${DataBucket}"), data),
                    input_format=PARQUET_FORMAT["input_format"],
                    output_format=PARQUET_FORMAT["output_format"],
                    serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library=PARQUET_FORMAT["serde"]),
                ),
            ),
        )
        cfn_table.add_resource_dependency(self.database)
        return cfn_table

    @staticmethod
    def _projection(table: Table, data: s3.IBucket) -> dict[str, str]:
        parameters = table.projection_parameters("s3://${DataBucket}")
        template = "storage.location.template"
        return {**parameters, template: _sub_location(parameters[template], data)}

    @staticmethod
    def _results_location(storage: Storage) -> s3.Bucket:
        """Results go to the data bucket's results prefix, which expires (nothing else lives there)."""
        storage.data.add_lifecycle_rule(
            id="expire-athena-results", prefix=f"{names.ATHENA_RESULTS_PREFIX}/", expiration=RESULTS_EXPIRY
        )
        return storage.data

    def _workgroup(self) -> athena.CfnWorkGroup:
        return athena.CfnWorkGroup(
            self,
            "Workgroup",
            name=self.workgroup_name,
            description="edgeloop named queries (edgeloop query run --athena-workgroup)",
            state="ENABLED",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,  # clients cannot redirect or unencrypt results
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=BYTES_SCANNED_CUTOFF,
                requester_pays_enabled=False,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(selected_engine_version=ATHENA_ENGINE_VERSION),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{self.results.bucket_name}/{names.ATHENA_RESULTS_PREFIX}/",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                ),
            ),
        )

    def _query_users_policy(self, data: s3.IBucket) -> iam.ManagedPolicy:
        stack = Stack.of(self)
        statements = self._query_users_statements(stack, data)
        policy = iam.ManagedPolicy(
            self,
            "QueryUsersPolicy",
            description="Run edgeloop's Athena queries: the workgroup, the Glue tables, read the table prefixes",
            statements=statements,
        )
        reasons = {
            "ReadTheTables": "a table is every object under its prefix; the prefixes are the query layer's tables only",
            "WriteAndReadResults": "Athena names each result object by query id, under the workgroup's results prefix",
        }
        for statement in statements:
            if statement.sid in reasons:
                for finding in wildcard_findings(stack, statement.actions, statement.resources):
                    acknowledge(policy, f"IAM5[{finding}]", reasons[statement.sid])
        return policy

    def _query_users_statements(self, stack: Stack, data: s3.IBucket) -> list[iam.PolicyStatement]:
        table_prefixes = sorted({table.prefix for table in TABLES.values()})
        results_objects = self.results.arn_for_objects(f"{names.ATHENA_RESULTS_PREFIX}/*")
        listed_prefixes = [*table_prefixes, names.ATHENA_RESULTS_PREFIX]
        return [
            iam.PolicyStatement(
                sid="RunQueriesInTheWorkgroup",
                actions=ATHENA_QUERY_ACTIONS,
                resources=[stack.format_arn(service="athena", resource="workgroup", resource_name=self.workgroup_name)],
            ),
            iam.PolicyStatement(
                sid="ReadTheCatalog",
                actions=GLUE_READ_ACTIONS,
                resources=[
                    stack.format_arn(service="glue", resource="catalog"),
                    stack.format_arn(service="glue", resource="database", resource_name=self.database_name),
                    *(
                        stack.format_arn(service="glue", resource="table", resource_name=f"{self.database_name}/{name}")
                        for name in TABLES
                    ),
                ],
            ),
            iam.PolicyStatement(
                sid="ReadTheTables",
                actions=["s3:GetObject"],
                resources=[data.arn_for_objects(f"{prefix}/*") for prefix in table_prefixes],
            ),
            iam.PolicyStatement(
                sid="ListTablesAndResults",
                actions=["s3:ListBucket"],
                resources=[data.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}/*" for prefix in listed_prefixes]}},
            ),
            iam.PolicyStatement(
                # GetBucketLocation carries no s3:prefix, so it cannot share the condition above.
                sid="LocateTheBucket",
                actions=["s3:GetBucketLocation"],
                resources=[data.bucket_arn],
            ),
            iam.PolicyStatement(
                sid="WriteAndReadResults",
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                resources=[results_objects],
            ),
        ]


def _sub_location(template: str, data: s3.IBucket) -> str:
    """Fn::Sub of an s3://${DataBucket}/... string; Athena's own ${partition} placeholders stay literal."""
    escaped = template.replace("${", "${!").replace("${!DataBucket}", "${DataBucket}")
    return Fn.sub(escaped, {"DataBucket": data.bucket_name})
