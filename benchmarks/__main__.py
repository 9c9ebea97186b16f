"""Run benchmark areas: `python -m benchmarks all` or `python -m benchmarks <area>`.

Each area is a module `benchmarks/bench_<area>.py` with `run() -> dict[str, tuple[float, str]]`
(name -> (value, unit)). Results go to benchmarks/results/<area>.json as
{"<name>": {"value": ..., "unit": "..."}}; ratios are measured against a baseline in the same run.
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import sys
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def areas() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(
        m.name.removeprefix("bench_") for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )


def _defined(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def run_area(area: str) -> Path:
    module = importlib.import_module(f"benchmarks.bench_{area}")
    results = module.run()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{area}.json"
    # An undefined figure (a precision with no positive prediction) is null: JSON has no NaN.
    document = {name: {"value": _defined(value), "unit": unit} for name, (value, unit) in results.items()}
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    for name, (value, unit) in results.items():
        print(f"{name:45s} {value:>14,.4g} {unit}")
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m benchmarks all|{'|'.join(areas())}", file=sys.stderr)
        return 2
    chosen = areas() if argv[0] == "all" else [argv[0]]
    unknown = [a for a in chosen if a not in areas()]
    if unknown:
        print(f"unknown benchmark area {unknown[0]!r}; known: {', '.join(areas()) or 'none'}", file=sys.stderr)
        return 2
    for area in chosen:
        print(f"== {area}")
        print(f"   -> {run_area(area)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
