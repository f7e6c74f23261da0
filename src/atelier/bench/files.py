"""The harness's files: sha256 of inputs, crash-safe JSON lines (append and read back), atomic JSON documents."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..files import atomic_write_text


def append_jsonl(path: Path, obj: dict) -> None:
    """Append one JSON line with a single write and fsync it: a crash leaves at most a torn last line."""
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Complete lines only; ``repair`` cuts a torn last line (left by a crash) so later appends start clean."""
    if not path.is_file():
        return []
    raw = path.read_bytes()
    good_end, out = 0, []
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            out.append(json.loads(line))
        except ValueError:
            break
        good_end += len(line)
    if repair and good_end != len(raw):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return out


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON, written atomically (``atelier.images.atomic_write_text``)."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
