"""The pipeline's steps, each a module with `main(argv)` (dataset, train, evaluate, register), run locally
or as SageMaker steps, and their parts: templates and search (training), export (weight-only payloads),
artifacts (model bucket keys and upload), lineage (registry metadata), signing_key, registration and
xgboost_image (the model registry)."""
