"""Register step: export each line's trained model, upload it and register it in the model registry.

`python -m edgeloop.sagemaker_pipelines.steps.register` is what the pipeline's Register step and
`edgeloop pipeline run-local` run. The pieces: artifacts.py (keys and upload), lineage.py (the
package's CustomerMetadataProperties), signing_key.py (the Ed25519 key, from a PEM or Secrets Manager),
registration.py (group, version, package, approval) and images.py (the serving image the package
names, when --serving-image does not: the pipeline passes its region's).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from edgeloop.model_runtime.signing import Ed25519PrivateKey
from edgeloop.schemas import names
from edgeloop.schemas.use_case import UseCaseConfig, resolve_use_case

from .dataset import DatasetInfo, read_dataset_info
from .evaluate import EvaluationReport, read_evaluation, unpack_trained
from .export import export_model
from .lineage import code_version
from .registration import approve_package, check_passed, next_version, register_model
from .signing_key import signing_key_for
from .train import load_trained


def main(argv: list[str] | None = None) -> dict[str, str]:
    """Export + register step: <trained>/<line_id>/ (from train.main) -> one model package per line.

    With --dataset and --evaluation (the pipeline's case) only that line is registered, with its data
    lineage, and only if the evaluation passed."""
    parser = _parser()
    args = parser.parse_args(argv)
    dataset = read_dataset_info(args.dataset) if args.dataset else None
    evaluation = read_evaluation(args.evaluation) if args.evaluation else None
    if evaluation is not None:
        check_passed(evaluation)  # before the signing key is even loaded: nothing of a failed candidate is uploaded
    signing_key = signing_key_for(args.signing_key, args.signing_key_secret_arn)
    config = resolve_use_case(args.use_case, args.use_case_file)
    with tempfile.TemporaryDirectory(prefix="edgeloop-trained-") as unpacked:
        trained_dir = unpack_trained(Path(args.trained), Path(unpacked))
        line_dirs = sorted(p for p in trained_dir.iterdir() if p.is_dir())
        if dataset is not None:
            line_dirs = [p for p in line_dirs if p.name == dataset.line_id]
        if not line_dirs:
            only = f" for line_id={dataset.line_id!r}" if dataset else ""
            parser.error(f"--trained {args.trained} holds no per-line model directories{only}")
        arns = register_lines(line_dirs, config, args, signing_key=signing_key, dataset=dataset, evaluation=evaluation)
    print(json.dumps(arns, indent=2))
    return arns


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--trained",
        required=True,
        help="directory with one saved trained model per line, or the training job's model.tar.gz (or a "
        "directory holding it)",
    )
    parser.add_argument("--model-bucket", default=os.environ.get(names.MODEL_BUCKET_ENV, names.LOCAL_MODEL_BUCKET))
    parser.add_argument("--use-case", default=None, help="a packaged use case (or $EDGELOOP_USE_CASE)")
    parser.add_argument("--use-case-file", default=None, help="a use-case file (or $EDGELOOP_USE_CASE_FILE)")
    parser.add_argument(
        "--version", default="", help="MAJOR.MINOR.PATCH of this model version (default: next patch in the group)"
    )
    parser.add_argument(
        "--signing-key",
        default=os.environ.get(names.MODEL_SIGNING_KEY_ENV) or None,
        help=f"Ed25519 private key (PEM file path or PEM text) the payloads are signed with "
        f"(default: ${names.MODEL_SIGNING_KEY_ENV})",
    )
    parser.add_argument(
        "--signing-key-secret-arn",
        default=os.environ.get(names.MODEL_SIGNING_KEY_SECRET_ARN_ENV) or None,
        help="ARN of a Secrets Manager secret whose SecretString is that PEM private key, read when "
        f"--signing-key is not given (default: ${names.MODEL_SIGNING_KEY_SECRET_ARN_ENV}; empty: unsigned)",
    )
    parser.add_argument("--dataset", default="", help="dataset step's dataset/ output (dataset.json)")
    parser.add_argument("--evaluation", default="", help="evaluate step's output (evaluation.json)")
    parser.add_argument(
        "--code-version", default="", help="git commit that trained the model (default: this checkout's)"
    )
    parser.add_argument(
        "--serving-image",
        default="",
        help="image URI the model package names (default: SageMaker's XGBoost serving image of the client's "
        "region, from steps/images.py)",
    )
    parser.add_argument("--approve", action="store_true", help="approve each registered package")
    return parser


def register_lines(
    line_dirs: list[Path],
    config: UseCaseConfig,
    args: argparse.Namespace,
    *,
    signing_key: Ed25519PrivateKey | None,
    dataset: DatasetInfo | None,
    evaluation: EvaluationReport | None,
) -> dict[str, str]:
    """Export, upload and register each line's saved model (main's parsed `args`); line_id -> package ARN."""
    arns = {}
    for line_dir in line_dirs:
        group = names.model_package_group_name(config.use_case, line_dir.name)
        exported = export_model(
            load_trained(line_dir),
            model_id=f"{config.use_case}-{line_dir.name}",
            version=args.version or next_version(group),
            use_case=config.use_case,
            line_ids=[line_dir.name],
            target=config.target_metric,
            precisions=tuple(config.precisions),
            signing_key=signing_key,
            code_version=args.code_version or code_version(),
        )
        arns[line_dir.name] = register_model(
            exported,
            model_bucket=args.model_bucket,
            serving_image=args.serving_image or None,
            dataset=dataset,
            evaluation=evaluation,
            signing_key=signing_key,
        )
        if args.approve:
            approve_package(arns[line_dir.name])
    return arns


if __name__ == "__main__":
    main()
