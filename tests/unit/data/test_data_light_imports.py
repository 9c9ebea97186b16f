"""Ingest runs on every telemetry message and the hot path on every raw object: their import paths
must stay free of numpy/pandas/pyarrow (their Lambdas have the Powertools layer only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("function", ["ingest", "hot_path"])
def test_handler_imports_neither_pandas_nor_numpy(function):
    probe = (
        "import json, sys\n"
        f"import edgeloop.functions.{function}.handler\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pandas', 'pyarrow'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"{function} handler pulled in {heavy[:5]}"


def test_probe_would_notice_numpy():
    # Guards the probe itself: the same check on a module that imports numpy must see it.
    probe = "import sys, edgeloop.model_runtime.features; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "True"
