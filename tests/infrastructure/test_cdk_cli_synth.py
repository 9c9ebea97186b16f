"""Acceptance: the pinned CDK CLI synthesizes the app offline and cfn-lint finds no errors.

This is what `make synth` runs (npx cdk synth --no-notices --quiet), into a temporary cdk.out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PINNED_CLI = "2.1148.1"
CDK_ENV = {
    "CDK_DISABLE_VERSION_CHECK": "1",
    "CDK_DISABLE_CLI_TELEMETRY": "true",
    "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
}

pytestmark = pytest.mark.slow


def _cdk(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    cli = REPO / "node_modules" / ".bin" / "cdk"
    assert cli.exists(), "the pinned CDK CLI is not installed: run `npm ci` (or `make setup-cdk`) in the repository"
    env = {**os.environ, **CDK_ENV, "EDGELOOP_CDK_STAGING_DIR": str(tmp_path / "staging")}
    return subprocess.run(
        ["npx", "--no-install", "cdk", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_package_json_pins_the_cli():
    package = json.loads((REPO / "package.json").read_text())
    assert package["devDependencies"]["aws-cdk"] == PINNED_CLI
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == PINNED_CLI


def test_cdk_synth_with_the_pinned_cli_passes_cdk_nag_and_cfn_lint(tmp_path):
    version = _cdk("--version", tmp_path=tmp_path)
    assert version.stdout.startswith(PINNED_CLI), version.stdout + version.stderr

    out = tmp_path / "cdk.out"
    synth = _cdk("synth", "--no-notices", "--quiet", "--output", str(out), tmp_path=tmp_path)
    assert synth.returncode == 0, synth.stdout[-3000:] + synth.stderr[-6000:]

    templates = sorted(out.glob("*.template.json"))
    assert [t.name for t in templates] == ["Edgeloop.template.json"]
    report = json.loads((out / "validation-report.json").read_text())
    (nag,) = [p for p in report["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert nag["conclusion"] == "success" and nag["violations"] == []
    assert all(len(v["reason"]) >= 20 for v in nag["suppressedViolations"])

    lint = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--non-zero-exit-code", "error", *map(str, templates)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert lint.returncode == 0, lint.stdout[-6000:] + lint.stderr[-2000:]
