"""How every benchmark hands over its result: the JSON on stdout, and the same text in ``--out`` when given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["emit"]


def emit(result: dict[str, Any], out: Path | None) -> str:
    """Print ``result`` as indented JSON and write it (with a final newline) to ``out`` if given; returns the text."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
    return text
