"""The training benchmark's dataset: 90 days of one simulated extrusion line as training examples.

One `ExtrusionLineSimulator` (default config, fixed seed) is advanced a day at a time; its
readings become curated-like rows (line_id, metric, time_ms, value) and its context intervals
(runs with spec limits) go through the production chain, `cloud.packing.examples.assemble_examples`
with the extrusion use case (5-minute packs every 30 s, label = mean cold_od_average over 30 s,
5 minutes after the pack). A run is packed once the simulator has passed its end, from the
samples buffered since its start, so chunking by day changes nothing: packs and labels never
look outside their run. Only the unfinished run's samples are carried to the next day, which
bounds memory to about a day of readings.

The simulator also records its hidden state (device_shims/extrusion_hidden.py: per second what has
been extruded, true speed and rpm, material factor, setpoints, the operators' last correction; 8 float32
columns, about 250 MB for 90 days) for the oracle (edgeloop/oracle.py); recording changes no sample.

Written once to benchmarks/.data/training-v<version>/ (not committed) as examples.parquet and hidden.npz
with a manifest (generator version, seed, days, the digest of the use case's packing settings and
feature names, rows, sha256 of both files) and reused while it matches: a change of the use case's
features regenerates it.

The second example line (`pipe_examples`): `PIPE_DAYS` days of Rohrlinie 2 written by the documented
generator (`python -m edgeloop.device_shims.pipe_extrusion --days N`: CSVs, mapping.yaml, use_case.yaml),
read as `edgeloop backfill` reads them (plan_backfill: mapped columns, context intervals; Layout: samples
in curated order; empty cells dropped, as ingest never lands them) and packed by the same
assemble_examples with the generated use case. Regenerated on every run (seconds); `pipe_hidden`
simulates the same recording again for its hidden state.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from edgeloop.cloud.packing.examples import PackStats, assemble_examples
from edgeloop.device_shims.extrusion import ExtrusionLineSimulator
from edgeloop.device_shims.extrusion_config import METRICS
from edgeloop.device_shims.extrusion_hidden import ExtrusionHidden
from edgeloop.device_shims.pipe_extrusion_hidden import PipeHidden
from edgeloop.schemas import ContextKind, UseCaseConfig, load_use_case

GENERATOR_VERSION = 2  # 2: the hidden-state record (hidden.npz) beside the examples
DATA_ROOT = Path(__file__).resolve().parent / ".data"
USE_CASE = "extrusion"
LINE_ID = "line-1"
SEED = 20260101
DAYS = 90
START_MS = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000)
DAY_S = 86_400
PIPE_LINE_ID = "rohrlinie-2"  # the README's `edgeloop backfill ... --line rohrlinie-2`
PIPE_DAYS = 2  # the README's `python -m edgeloop.device_shims.pipe_extrusion --days 2`
EXAMPLES_FILE = "examples.parquet"
HIDDEN_FILE = "hidden.npz"
MANIFEST_FILE = "manifest.json"
# use case fields that do not change the examples (training, decisions, gate): editing them keeps the cache
NOT_PACKING = frozenset(
    {
        "description",
        "training",
        "label",
        "validation",
        "decision",
        "monitoring",
        "live_context",  # the gateway's rules; packing reads the stored context intervals
        "model_families",
        "precisions",
    }
)


@dataclass(frozen=True)
class TrainingDataset:
    path: Path  # the examples Parquet
    manifest: dict
    generated_s: float | None  # seconds spent generating it in this process; None when reused

    def examples(self) -> pd.DataFrame:
        return pd.read_parquet(self.path)

    def hidden(self) -> ExtrusionHidden:
        """The simulator's hidden state, per second of the simulated days (for the oracle)."""
        return ExtrusionHidden.load(self.path.with_name(HIDDEN_FILE))


def dataset_dir(days: int = DAYS, seed: int = SEED, root: Path = DATA_ROOT) -> Path:
    return root / f"training-v{GENERATOR_VERSION}" / f"{LINE_ID}-seed{seed}-{days}d"


def ensure_examples(days: int = DAYS, *, seed: int = SEED, root: Path = DATA_ROOT) -> TrainingDataset:
    """The examples of `days` simulated days, generated (and cached under `root`) unless a valid copy exists."""
    if not isinstance(days, int) or days < 1:
        raise ValueError(f"days={days!r} must be a positive whole number")
    directory = dataset_dir(days, seed, root)
    path, manifest_path = directory / EXAMPLES_FILE, directory / MANIFEST_FILE
    expected = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "days": days,
        "line_id": LINE_ID,
        "packing_sha256": packing_sha256(load_use_case(USE_CASE)),
    }
    hidden_path = directory / HIDDEN_FILE
    cached = _valid_manifest(manifest_path, path, expected, hidden_path)
    if cached is not None:
        return TrainingDataset(path=path, manifest=cached, generated_s=None)

    print(f"   generating {days} simulated days of {LINE_ID} (seed {seed}) as training examples (once)", flush=True)
    start = time.perf_counter()
    examples, stats, hidden = simulate_examples(days, seed=seed)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    examples.to_parquet(tmp, compression="zstd", index=False)
    tmp.rename(path)  # a crashed generation never leaves a file the manifest could vouch for
    hidden_tmp = directory / f"tmp-{HIDDEN_FILE}"  # np.savez keeps a name ending in .npz as it is
    hidden.save(hidden_tmp)
    hidden_tmp.rename(hidden_path)
    elapsed = time.perf_counter() - start
    manifest = {
        **expected,
        "use_case": USE_CASE,
        "start_ms": START_MS,
        "rows": len(examples),
        "sha256": _sha256(path),
        "hidden_sha256": _sha256(hidden_path),
        "hidden_seconds": len(hidden),
        "generation_s": round(elapsed, 1),
        "pack_stats": stats.__dict__,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"   {len(examples):,} examples from {stats.runs} runs in {elapsed:.1f} s -> {path}", flush=True)
    return TrainingDataset(path=path, manifest=manifest, generated_s=elapsed)


def simulate_examples(
    days: float, *, seed: int = SEED, chunk_s: int = DAY_S
) -> tuple[pd.DataFrame, PackStats, ExtrusionHidden]:
    """Examples of every run the simulated line finishes within `days` days, in time order,
    simulated and packed `chunk_s` seconds at a time (the result does not depend on it), and the
    simulator's hidden-state record of those seconds."""
    use_case = load_use_case(USE_CASE)
    simulator = ExtrusionLineSimulator(LINE_ID, seed=seed, start_ms=START_MS, record_hidden=True)
    total_s = round(days * DAY_S)
    buffered = _empty_samples()
    packed_runs: set[str] = set()
    frames, stats = [], PackStats()
    for chunk_start_s in range(0, total_s, chunk_s):
        seconds = min(chunk_s, total_s - chunk_start_s)
        buffered = pd.concat([buffered, curated_like(*simulator.advance_arrays(seconds))], ignore_index=True)
        finished = _finished_runs(simulator, packed_runs)
        if finished:
            build = assemble_examples(buffered, finished, use_case)
            frames.append(build.examples)
            stats.add(build.stats)
            packed_runs.update(run.interval_id for run in finished)
        # keep only what the run in progress (or the next one) still needs
        buffered = buffered[buffered["time_ms"] >= _open_from_ms(simulator)].reset_index(drop=True)
    examples = pd.concat(frames, ignore_index=True)
    stats.examples = len(examples)
    return examples, stats, simulator.hidden_record()


def curated_like(metric_index: np.ndarray, time_ms: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """Simulator readings in the curated columns the packer reads."""
    n = len(time_ms)
    return pd.DataFrame(
        {
            "line_id": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), categories=[LINE_ID]),
            "metric": pd.Categorical.from_codes(metric_index.astype(np.int8), categories=list(METRICS)),
            "time_ms": time_ms.astype(np.int64),
            "value": values.astype(np.float64),
        }
    )


def _empty_samples() -> pd.DataFrame:
    return curated_like(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def _finished_runs(simulator: ExtrusionLineSimulator, packed: set[str]):
    """Run intervals that ended by the simulator's present and were not packed yet.

    context_intervals() cuts a run in progress at the present; such a run is left for later, when
    its real end is known (its segment's end_s).
    """
    ended_ms = {
        f"{LINE_ID}-run-{s.run_number:04d}": simulator.start_ms + s.end_s * 1000
        for s in simulator.segments()
        if s.kind == "run"
    }
    return [
        interval
        for interval in simulator.context_intervals()
        if interval.kind is ContextKind.RUN
        and interval.interval_id not in packed
        and ended_ms[interval.interval_id] <= simulator.now_ms
        and _ms(interval.end) == ended_ms[interval.interval_id]
    ]


def _open_from_ms(simulator: ExtrusionLineSimulator) -> int:
    """Start of the earliest segment not over yet: samples before it are no longer needed."""
    open_segments = [s for s in simulator.segments() if simulator.start_ms + s.end_s * 1000 > simulator.now_ms]
    return simulator.start_ms + min(s.start_s for s in open_segments) * 1000 if open_segments else simulator.now_ms


def packing_sha256(use_case: UseCaseConfig) -> str:
    """Digest of what shapes the examples (packs, labels, features): a change regenerates the cache."""
    shaping = use_case.model_dump(mode="json", exclude=set(NOT_PACKING))
    text = json.dumps({"config": shaping, "feature_names": use_case.feature_names}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _valid_manifest(manifest_path: Path, path: Path, expected: dict, hidden_path: Path) -> dict | None:
    if not (manifest_path.exists() and path.exists() and hidden_path.exists()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return None
    if any(manifest.get(key) != value for key, value in expected.items()):
        return None
    if manifest.get("sha256") != _sha256(path) or manifest.get("hidden_sha256") != _sha256(hidden_path):
        return None
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


# --- the second example line ---------------------------------------------------------------------


def pipe_hidden(days: float = PIPE_DAYS) -> PipeHidden:
    """The hidden state of the recording pipe_examples packs: the generator's defaults (seed, start) make
    the same recording again."""
    from edgeloop.device_shims.pipe_extrusion import DEFAULT_SEED, DEFAULT_START, PipeExtrusionSimulator, local_start_ms

    recording = PipeExtrusionSimulator(seed=DEFAULT_SEED).record(local_start_ms(DEFAULT_START), days * 24 * 3600)
    if recording.hidden is None:
        raise ValueError("the pipe recording carries no hidden state")
    return recording.hidden


def pipe_examples(days: float = PIPE_DAYS) -> tuple[pd.DataFrame, UseCaseConfig]:
    """Examples of `days` days of the generated pipe-extrusion line, with its generated use case."""
    from edgeloop.backfill.layout import Layout
    from edgeloop.backfill.plan import plan_backfill
    from edgeloop.device_shims.pipe_extrusion import FILE_PREFIX, MAPPING_FILE, USE_CASE_FILE, write_example
    from edgeloop.schemas.use_case import load_use_case_file

    with tempfile.TemporaryDirectory(prefix="bench-pipe-") as folder:
        out = Path(folder)
        write_example(out, hours=days * 24)
        use_case = load_use_case_file(out / USE_CASE_FILE)
        files = sorted(out.glob(f"{FILE_PREFIX}_*.csv"))
        plan = plan_backfill(files, out / MAPPING_FILE, line_id=PIPE_LINE_ID, use_case=use_case)
    frames, intervals = [], []
    for recording in plan.recordings:
        layout = Layout(plan, recording)
        intervals.extend(recording.intervals)
        for samples, day in layout.days():
            if day is None:  # no usable timestamp: backfill quarantines these
                continue
            keep = np.isfinite(samples.value)
            frames.append(
                pd.DataFrame(
                    {
                        "line_id": PIPE_LINE_ID,
                        "metric": np.asarray(layout.metrics, dtype=object)[samples.code[keep]],
                        "time_ms": samples.time_ms[keep],
                        "value": samples.value[keep],
                    }
                )
            )
    curated = pd.concat(frames, ignore_index=True).sort_values(["metric", "time_ms"], kind="stable")
    curated = curated.astype({"line_id": "category", "metric": "category"}).reset_index(drop=True)
    return assemble_examples(curated, intervals, use_case).examples, use_case
