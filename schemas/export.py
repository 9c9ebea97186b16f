"""Write the JSON Schema of every exported contract: `python -m edgeloop.schemas.export [DIR]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import EXPORTED_MODELS

JSON_DIR = Path(__file__).resolve().parent / "json"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, deterministic so a stale checked-in copy can be detected."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in EXPORTED_MODELS.items()
    }


def write_schemas(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rendered = render_schemas()
    for stale in set(p.name for p in directory.glob("*.schema.json")) - set(rendered):
        (directory / stale).unlink()
    written = []
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else JSON_DIR
    for path in write_schemas(target):
        print(path)
