"""Ingest cold start: the handler's import in a fresh Lambda-like interpreter, against a bare `import boto3`.

A Lambda-like interpreter (what Lambda's Python runtime starts for a cold function):
- no site processing (`-S`: no editable install of edgeloop, no .pth files), and on its path only the
  staged, precompiled asset (cdk/lambda_asset.py) and a site directory holding just the packages the
  function would find in Lambda: the runtime's boto3 and its dependencies, and what the Powertools
  layer carries (LAMBDA_DISTRIBUTIONS; symlinks to this environment's copies). The development
  environment holds much more (sqlalchemy, requests, awscrt, pandas, ...), and some of it changes
  what gets imported: the X-Ray SDK, for one, patches every library it supports that it can import;
- bytecode is never written (Lambda's code and layers are read-only), and the environment variables
  a Lambda function has (LAMBDA_TASK_ROOT makes the X-Ray SDK sample locally instead of building a
  client of the X-Ray service).

Figures are process CPU time (time.process_time), not wall clock: on a machine whose cores are busy
with other work, wall-clock import times of the same process swing by 2x, CPU time by about 10%.
Each probe runs in its own fresh interpreter; probes are interleaved in a shuffled order per round
(after one warm-up round for the page cache) and each figure is the median over the rounds.

- handler: `import edgeloop.functions.ingest.handler`, what Lambda's init phase runs (the handler
  imports everything its invocations need there: the init phase runs with more CPU than an
  invocation of a 512 MB function gets, so deferring imports into the first call would only make that
  call slower); the ratio to a bare `import boto3` in the same rounds is the target (<= 1.3);
- split: the third-party packages the handler needs (pydantic, boto3, Powertools' Logger and
  Metrics; ingest does without the X-Ray SDK, see cloud/observability.py), then edgeloop's own
  modules;
- floor: `import boto3` then pydantic with one model defined, what any handler validating its event
  with a pydantic model pays before its own code.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HANDLER_MODULE = "edgeloop.functions.ingest.handler"

# What `pip download 'aws-lambda-powertools[all]'` fetches (the Powertools layer's content), plus the
# Python runtime's own boto3 and its dependencies.
LAMBDA_DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "aws-lambda-powertools",
    "aws-xray-sdk",
    "wrapt",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
    "fastjsonschema",
    "aws-encryption-sdk",
    "cryptography",
    "cffi",
    "pycparser",
    "attrs",
    "jsonpath-ng",
    "pyjwt",
)

_PROBE = """
import json, sys, time
phases = {}
start, start_cpu = time.perf_counter(), time.process_time()
for phase, statement in json.loads(sys.argv[1]):
    exec(statement)
    phases[phase] = (time.perf_counter() - start) * 1000
    phases[phase + "_cpu"] = (time.process_time() - start_cpu) * 1000
print(json.dumps(phases))
"""

# name -> phases (each a statement; the figure of a phase is the time from the start to its end)
PROBES = {
    "boto3": [("total", "import boto3")],
    "handler": [("total", f"import {HANDLER_MODULE}")],
    "floor": [("total", "import boto3, pydantic\nclass Probe(pydantic.BaseModel):\n    value: int")],
    "split": [
        (
            "third_party",
            "import pydantic, botocore.session, boto3\nfrom aws_lambda_powertools import Logger, Metrics\n"
            "Logger(service='probe'), Metrics(namespace='probe')",
        ),
        ("total", f"import {HANDLER_MODULE}"),
    ],
}


def lambda_like_site(target: Path, distributions: tuple[str, ...] = LAMBDA_DISTRIBUTIONS) -> Path:
    """A directory with only those of `distributions` installed here (top-level packages and their
    .dist-info), as symlinks."""
    source = Path(sysconfig.get_paths()["purelib"])
    target.mkdir(parents=True, exist_ok=True)
    for name in distributions:
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (the handler does not use it)
        tops = {Path(str(f)).parts[0] for f in distribution.files or ()}
        for top in tops:
            if top.startswith("..") or top == "__pycache__" or not (source / top).exists():
                continue
            link = target / top
            if not link.exists():
                link.symlink_to(source / top)
    return target


def lambda_environment(asset: Path, site: Path) -> dict[str, str]:
    from edgeloop.cdk.constructs.lambda_runtime import RUNTIME_ENVIRONMENT

    return {
        **RUNTIME_ENVIRONMENT,  # what the stack sets on every function
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(asset), str(site)]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(asset),
        "AWS_LAMBDA_FUNCTION_NAME": "edgeloop-ingest",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_SERVICE_NAME": "ingest",
        "POWERTOOLS_METRICS_NAMESPACE": "edgeloop",
    }


def run_probe(probe: str, env: dict[str, str], cwd: str) -> dict[str, float]:
    command = [sys.executable, "-S", "-c", _PROBE, json.dumps(PROBES[probe])]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=cwd).stdout)


def cold_import_samples(repeats: int = 9, probes: tuple[str, ...] = tuple(PROBES)) -> list[dict[str, dict]]:
    """`repeats` rounds (after one warm-up round), each running every probe once in a shuffled order."""
    from edgeloop.cdk.lambda_asset import stage_lambda_asset

    rounds = []
    shuffle = random.Random(13).shuffle
    with tempfile.TemporaryDirectory() as staging:
        asset = stage_lambda_asset(Path(staging) / "asset")
        env = lambda_environment(asset, lambda_like_site(Path(staging) / "site"))
        for _ in range(repeats + 1):
            order = list(probes)
            shuffle(order)
            rounds.append({probe: run_probe(probe, env, staging) for probe in order})
    return rounds[1:]


def cold_import_figures(repeats: int = 9) -> dict[str, float]:
    """Medians of CPU ms (handler, split, bare boto3) and of the per-round ratio."""
    rounds = cold_import_samples(repeats)

    def median(probe: str, phase: str = "total") -> float:
        return statistics.median(r[probe][f"{phase}_cpu"] for r in rounds)

    def ratio(probe: str) -> float:
        return statistics.median(r[probe]["total_cpu"] / r["boto3"]["total_cpu"] for r in rounds)

    third_party = median("split", "third_party")
    return {
        "handler_ms": median("handler"),
        "boto3_ms": median("boto3"),
        "third_party_ms": third_party,
        "own_ms": median("split") - third_party,
        "ratio": ratio("handler"),
        "floor_ratio": ratio("floor"),
    }


if __name__ == "__main__":
    print(json.dumps(cold_import_figures(int(sys.argv[1]) if len(sys.argv) > 1 else 9), indent=2))
