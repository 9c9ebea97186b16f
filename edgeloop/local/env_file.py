"""`<dir>/local.env`: how a running `edgeloop local up` tells shells and other commands where it is.

One `export KEY='value'` line per variable, so `source <dir>/local.env` points a shell's AWS
clients (AWS_ENDPOINT_URL, fake credentials), buckets, tables and broker at the local stack;
`read_env_file` reads the same lines back (`edgeloop local gateway add --dir`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

from edgeloop.schemas import names

_NAME_CHARACTERS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def env_file_path(local_dir: Path) -> Path:
    return Path(local_dir) / names.LOCAL_ENV_FILE


def format_env_file(values: Mapping[str, str], header: str = "") -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for key, value in values.items():
        if not key or key[0].isdigit() or not set(key) <= _NAME_CHARACTERS:
            raise ValueError(f"environment variable name {key!r} is not a shell variable name")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> Path:
    """Write atomically (a reader polling for the file never sees half of it); only the user may read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(format_env_file(values, header))
    os.chmod(partial, 0o600)
    partial.replace(path)
    return path


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a file `write_env_file` wrote; a ValueError names the file and line it cannot read."""
    path = Path(path)
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}: {line!r}") from None
        if words and words[0] == "export":
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            raise ValueError(f"{path}:{number}: expected `export KEY=VALUE`, got {line!r}")
        key, value = words[0].split("=", 1)
        values[key] = value
    return values
