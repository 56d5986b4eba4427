"""The client roster in ``params.yaml``: list, add and remove hospitals without losing the file's comments.

Edits go through ruamel.yaml's round-trip mode (comments, order and flow style kept), are validated as a
whole params file (with path checks) before anything is written, and are written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsfed.config import ConfigError, Params, parse_params
from dsfed.errors import DsfedError
from dsfed.io import atomic_path

__all__ = ["add_client", "edit_params", "list_clients", "remove_client"]


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments and layout survive
    yaml.width = 4096  # keep each client on one line, as written
    yaml.preserve_quotes = True
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DsfedError(f"{path}: no such params file")
    return _yaml().load(path.read_text())


def _check_and_write(path: Path, doc: Any) -> Params:
    buffer = io.StringIO()
    _yaml().dump(doc, buffer)
    text = buffer.getvalue()
    import yaml as pyyaml

    params = parse_params(pyyaml.safe_load(text), root=path.parent, check_paths=True, source=str(path))
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text)
    return params


def edit_params(path: str | Path, edit: Callable[[Any], None]) -> Params:
    """Apply ``edit`` to the round-trip document of ``path`` (ruamel's maps and lists: comments and layout
    kept), then validate the whole file and write it atomically; an invalid result writes nothing."""
    path = Path(path)
    doc = _load(path)
    edit(doc)
    return _check_and_write(path, doc)


def list_clients(path: str | Path) -> list[dict[str, Any]]:
    """One row per client: name, source kind, path, whether it is held out."""
    from dsfed.config import load_params

    params = load_params(path)
    return [{"client": name, "kind": c.source.kind, "path": str(getattr(c.source, "path", "")),
             "held_out": name == params.data.holdout} for name, c in params.clients.items()]


def add_client(path: str | Path, name: str, source: dict[str, Any], federate: bool = False) -> Params:
    """Add ``clients.<name>`` with ``source``; refuses an existing name or an invalid source (one line).

    ``federate``: also append it to a pinned ``federated.clients`` (the federated stages then retrain with
    it); without, a pinned federation is left as it is and the client joins through DSFedMed's synthetic
    data and distillation only.
    """
    from ruamel.yaml.comments import CommentedMap

    path = Path(path)
    doc = _load(path)
    if name in doc["clients"]:
        raise DsfedError(f"clients.{name}: already in {path} (remove it first, or pick another name)")
    flow = CommentedMap(source)
    flow.fa.set_flow_style()
    doc["clients"][name] = CommentedMap(source=flow)
    federation = (doc.get("federated") or {}).get("clients")
    if federate and federation is not None:
        federation.append(name)
    try:
        return _check_and_write(path, doc)
    except ConfigError as exc:
        raise ConfigError([p for p in exc.problems], source=str(path)) from None


def remove_client(path: str | Path, name: str) -> Params:
    """Remove ``clients.<name>`` (and from ``federated.clients``; its artifacts stay in DVC's cache);
    refuses the held-out client."""
    path = Path(path)
    doc = _load(path)
    if name not in doc["clients"]:
        raise DsfedError(f"clients.{name}: not in {path} (have: {', '.join(doc['clients'])})")
    if doc.get("data", {}).get("holdout") == name:
        raise DsfedError(f"clients.{name}: it is data.holdout; set another held-out client (or null) first")
    del doc["clients"][name]
    federation = (doc.get("federated") or {}).get("clients")
    if federation is not None and name in federation:
        federation.remove(name)  # the federated stages retrain without it
    return _check_and_write(path, doc)
