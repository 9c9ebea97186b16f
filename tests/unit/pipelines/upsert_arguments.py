"""`edgeloop pipeline upsert` arguments for a made-up account, shared by the tests of that command."""

ROLE_ARN = "arn:aws:iam::123456789012:role/edgeloop-pipeline"
UPSERT_ARGUMENTS = (
    "--role-arn", ROLE_ARN,
    "--data-bucket", "acme-data",
    "--model-bucket", "acme-models",
    "--image-uri", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/edgeloop-steps:1",
    "--code-s3-uri", "s3://acme-assets/code.zip",
    "--region", "eu-west-1",
)  # fmt: skip
