"""Mirror table prefixes of the data bucket into a local directory for DuckDB.

DuckDB's httpfs extension cannot be installed offline, so the Parquet is copied with boto3 (which
honours AWS_ENDPOINT_URL: moto_server in the demo). A manifest of ETags makes reruns copy only
changed objects, and local files whose object is gone are removed: compaction replaces a
partition's part under a new name, and a stale copy would duplicate its rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from edgeloop.cloud.aws import client

from .tables import TABLES

MANIFEST_NAME = ".mirror-manifest.json"


@dataclass
class MirrorResult:
    downloaded: list[str] = field(default_factory=list)  # keys copied (new or changed)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)  # keys gone from the bucket, deleted locally


def mirror_prefix(bucket: str, prefix: str, root: Path, result: MirrorResult | None = None) -> MirrorResult:
    """Make root/<prefix>/... equal the Parquet objects under s3://bucket/<prefix>/."""
    prefix = prefix.strip("/") + "/"
    root = Path(root)
    result = result or MirrorResult()
    manifest = _load_manifest(root)
    listed = {}
    for page in client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".parquet"):
                listed[item["Key"]] = item["ETag"]
    for key, etag in sorted(listed.items()):
        path = _local_path(root, key)
        if manifest.get(key) == etag and path.exists():
            result.unchanged += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")  # never leave a torn file where DuckDB globs
        client("s3").download_file(bucket, key, str(partial))
        partial.replace(path)
        manifest[key] = etag
        result.downloaded.append(key)
    for key in sorted(k for k in manifest if k.startswith(prefix) and k not in listed):
        _local_path(root, key).unlink(missing_ok=True)
        del manifest[key]
        result.removed.append(key)
    _save_manifest(root, manifest)
    return result


def mirror_tables(bucket: str, root: Path, table_names: Iterable[str] | None = None) -> MirrorResult:
    """Mirror the prefix of every table (or of the named ones) into root."""
    wanted = list(TABLES) if table_names is None else list(table_names)
    unknown = [name for name in wanted if name not in TABLES]
    if unknown:
        raise ValueError(f"tables {unknown} are not among {list(TABLES)}")
    result = MirrorResult()
    for name in wanted:
        mirror_prefix(bucket, TABLES[name].prefix, root, result)
    return result


def _local_path(root: Path, key: str) -> Path:
    parts = PurePosixPath(key).parts
    if ".." in parts or key.startswith("/"):
        raise ValueError(f"object key={key!r} would escape the mirror directory")
    return root.joinpath(*parts)


def _load_manifest(root: Path) -> dict[str, str]:
    path = root / MANIFEST_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def _save_manifest(root: Path, manifest: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    partial.replace(path)
