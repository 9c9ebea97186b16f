"""The Lambda runtime's Python, in one place, and how an unzipped tree is weighed.

Shared by the asset staging (cdk/lambda_asset.py precompiles bytecode for this version) and the
constructs (layers.py builds the runtime and the layers' parameter names from it; functions.py
checks code plus layers against Lambda's unzipped limit). No aws_cdk import here: staging uses it.
"""

from __future__ import annotations

from pathlib import Path

# The asset's bytecode is valid for exactly this minor version, and both public layers are built
# per minor version: raise it here and everything moves together (layer sizes must be re-measured).
LAMBDA_PYTHON = (3, 11)

# Every function's environment, beside its own variables. pydantic looks for plugins in every
# installed distribution's entry points (importlib.metadata) when it builds its first model: about a
# quarter of a bare `import boto3` in a cold start (benchmarks/storage_cold_start.py); edgeloop uses none.
RUNTIME_ENVIRONMENT = {"PYDANTIC_DISABLE_PLUGINS": "__all__"}


def unzipped_bytes(root: Path) -> int:
    """What the tree weighs once Lambda unzips it (the sum of the file sizes)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())
