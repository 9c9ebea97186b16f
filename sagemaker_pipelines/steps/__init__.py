"""Pipeline steps: train, export and register per-line models (run locally or as SageMaker steps)."""
