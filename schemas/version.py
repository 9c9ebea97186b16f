"""The package version, defined once: pyproject.toml reads it (setuptools `attr`, read without importing),
`edgeloop.__version__` repeats it, the stack publishes both Greengrass components at it, the recipes'
dependency ranges derive from it and the orchestrator's rollouts deploy it.

A Greengrass component version is immutable once created in an account: raise this before a changed
component is deployed again (CloudFormation cannot create the same name and version twice)."""

PACKAGE_VERSION = "0.1.0"
