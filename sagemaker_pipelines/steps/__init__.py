"""The pipeline's steps, each a module with `main(argv)` (dataset, train, evaluate, register), run locally
or as SageMaker steps, and their parts: templates and search (training), export (weight-only payloads),
artifacts (model bucket keys and upload), lineage (registry metadata), signing_key, registration
(the model registry) and images (SageMaker's XGBoost image the steps run in and a model package names)."""
