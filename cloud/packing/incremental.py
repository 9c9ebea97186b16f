"""The metric packer's build of a line: only the runs that changed are packed.

A run's examples depend on the line's curated samples inside the run, the run interval itself, the
limits and states in force during it, and the use case; nothing else (examples.py). So each run gets
a signature over exactly those: the use case, the run interval, the limits and states intervals
overlapping the run, and the keys of the curated parts of the event dates the run covers (a part's name is its
content's digest: a rewritten partition has new keys). The stored packs files record each run's
signature (cloud/datalake/packs.py); a round
1. reads the line's context and lists its curated parts (one listing, no object read),
2. packs the runs whose signature is new or different, reading only the curated days they cover,
3. keeps the stored rows of every other run, drops those of runs no longer in the context, and
4. writes both files, examples.parquet last and conditionally (a racing packer makes this one redo).
A line without runs (no context yet) is neither listed nor given empty files (readers take a missing
file as no packs); once it has had packs, dropping its last run rewrites them empty.
The result, rows and order, is what packing all runs from scratch gives (tested), so the review
queue (label_review.py) sees the same measured and unlabeled packs. What a round reads is the
changed runs' days, whatever the history; the stored examples themselves are read and rewritten
whole, which grows with the line's examples (~30x smaller than its curated samples).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from edgeloop.cloud.datalake.context import get_context_intervals, to_ms
from edgeloop.cloud.datalake.curated import empty_curated, line_partitions, read_parts
from edgeloop.cloud.datalake.packs import StoredPacks, examples_key, read_packs, unlabeled_key, write_packs
from edgeloop.schemas import ContextInterval, ContextKind, UseCaseConfig

WRITE_ATTEMPTS = 5
DAY_MS = 86_400_000
# examples.assemble_examples(curated, intervals, use_case, runs=...) -> ExampleBuild, passed in by
# examples.py (whose build entry points call this module)
Assemble = Callable[..., Any]


@dataclass(frozen=True)
class LinePacks:
    examples: pd.DataFrame
    unlabeled: pd.DataFrame
    stats: dict[str, int]  # examples.PackStats' fields summed over the line's runs
    runs_packed: int


def pack_line(bucket: str, line_id: str, use_case: UseCaseConfig, assemble: Assemble) -> LinePacks:
    """Pack the line's changed runs, store the line's examples and unlabeled packs, return them all."""
    for _ in range(WRITE_ATTEMPTS):
        packs, written = _pack_round(bucket, line_id, use_case, assemble)
        if written:
            return packs
    raise RuntimeError(f"line {line_id!r}: {examples_key(line_id)} changed under {WRITE_ATTEMPTS} rewrites in a row")


def _pack_round(bucket: str, line_id: str, use_case: UseCaseConfig, assemble: Assemble) -> tuple[LinePacks, bool]:
    intervals = [i for i in get_context_intervals(bucket, line_id) if i.line_id == line_id]
    runs = sorted((i for i in intervals if i.kind is ContextKind.RUN), key=lambda i: i.start)
    # a line without runs packs nothing: no listing (a billed request every compaction round)
    partitions = line_partitions(bucket, line_id) if runs else {}
    use_case_digest = hashlib.sha256(use_case.model_dump_json().encode()).hexdigest()
    signatures = {run.interval_id: _signature(run, intervals, partitions, use_case_digest) for run in runs}
    stored, stored_unlabeled = read_packs(bucket, examples_key(line_id)), read_packs(bucket, unlabeled_key(line_id))
    clean = {
        run_id
        for run_id, signature in signatures.items()
        if stored.frame is not None
        and stored_unlabeled.frame is not None
        and stored.runs.get(run_id, {}).get("signature") == signature
        and stored_unlabeled.runs.get(run_id, {}).get("signature") == signature
    }
    dirty = [run for run in runs if run.interval_id not in clean]
    order = [run.interval_id for run in runs]
    unchanged = stored.frame is not None and stored_unlabeled.frame is not None
    if unchanged and not dirty and set(stored.runs) == set(stored_unlabeled.runs) == clean:
        return _as_stored(stored, stored_unlabeled, order), True
    empty = assemble(empty_curated(), [], use_case)
    if not runs and stored.frame is None and stored_unlabeled.frame is None:  # readers take no file as none
        stats = {**dict.fromkeys(asdict(empty.stats), 0), "examples": 0, "unlabeled": 0}
        return LinePacks(examples=empty.examples, unlabeled=empty.unlabeled, stats=stats, runs_packed=0), True
    fresh = _pack_runs(bucket, dirty, intervals, partitions, use_case, assemble)
    examples = _combine(order, clean, stored.frame, {r: b.examples for r, b in fresh.items()}, empty.examples)
    unlabeled = _combine(
        order, clean, stored_unlabeled.frame, {r: b.unlabeled for r, b in fresh.items()}, empty.unlabeled
    )
    records = {
        run_id: {
            "signature": signatures[run_id],
            "stats": asdict(fresh[run_id].stats) if run_id in fresh else stored.runs[run_id]["stats"],
        }
        for run_id in order
    }
    write_packs(bucket, unlabeled_key(line_id), unlabeled, records)
    written = write_packs(bucket, examples_key(line_id), examples, records, etag=stored.etag, conditional=True)
    stats = dict.fromkeys(asdict(empty.stats), 0)
    for record in records.values():
        stats = {name: stats[name] + record["stats"][name] for name in stats}
    stats.update(examples=len(examples), unlabeled=len(unlabeled))
    return LinePacks(examples=examples, unlabeled=unlabeled, stats=stats, runs_packed=len(fresh)), written


def _as_stored(stored: StoredPacks, stored_unlabeled: StoredPacks, order: list[str]) -> LinePacks:
    """Nothing changed: what is stored, without rewriting it."""
    stats = dict.fromkeys(next(iter(stored.runs.values()))["stats"], 0) if stored.runs else {}
    for run_id in order:
        stats = {name: stats[name] + stored.runs[run_id]["stats"][name] for name in stats}
    stats.update(examples=len(stored.frame), unlabeled=len(stored_unlabeled.frame))
    return LinePacks(examples=stored.frame, unlabeled=stored_unlabeled.frame, stats=stats, runs_packed=0)


def _pack_runs(
    bucket: str,
    dirty: list[ContextInterval],
    intervals: list[ContextInterval],
    partitions: dict[str, list[str]],
    use_case: UseCaseConfig,
    assemble: Assemble,
) -> dict[str, Any]:
    """Each dirty run packed on its own (its own counts), from one read of the days they cover."""
    if not dirty:
        return {}
    keys = sorted({key for run in dirty for day in _days(run) for key in partitions.get(day, [])})
    curated = read_parts(bucket, keys)
    return {run.interval_id: assemble(curated, intervals, use_case, runs={run.interval_id}) for run in dirty}


def _combine(
    order: list[str],
    clean: set[str],
    stored: pd.DataFrame | None,
    fresh: dict[str, pd.DataFrame],
    empty: pd.DataFrame,
) -> pd.DataFrame:
    """Rows per run in the runs' order: stored rows for clean runs, fresh ones for the others."""
    kept = {} if stored is None else {run_id: rows for run_id, rows in stored.groupby("run_id", sort=False)}
    frames = [fresh[r] if r in fresh else kept[r] for r in order if r in fresh or r in kept and r in clean]
    frames = [frame for frame in frames if len(frame)]
    if not frames:
        return empty
    return pd.concat([empty, *frames], ignore_index=True)


def _days(run: ContextInterval) -> list[str]:
    """The UTC event dates a run's samples can have: from its start to its last millisecond."""
    first, last = to_ms(run.start) // DAY_MS, (to_ms(run.end) - 1) // DAY_MS
    return [str(np.datetime64(day, "D")) for day in range(first, last + 1)]


def _signature(
    run: ContextInterval, intervals: list[ContextInterval], partitions: dict[str, list[str]], use_case_digest: str
) -> str:
    """What the run's examples are made of: the use case, the run, the limits and states intervals
    overlapping it (whatever lies outside a run cannot change its packs), its days' curated parts."""
    overlapping = [
        i.model_dump(mode="json")
        for i in intervals
        if i.kind is not ContextKind.RUN and i.start < run.end and i.end > run.start
    ]
    content = {
        "use_case": use_case_digest,
        "run": run.model_dump(mode="json"),
        "context": sorted(overlapping, key=lambda i: json.dumps(i, sort_keys=True)),
        "parts": [key for day in _days(run) for key in partitions.get(day, [])],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
