"""The ``dsfed`` command line (typer): configuration checks, client stores, previews."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dsfed.cli.deploy import register as register_deploy
from dsfed.cli.flower import register as register_flower
from dsfed.cli.pretrain import register as register_pretrain
from dsfed.errors import DsfedError

app = typer.Typer(
    name="dsfed",
    help="Federated segmentation with a foundation model and lightweight clients (DSFedMed, SAM-Fed).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Check and inspect params.yaml.", no_args_is_help=True)
clients_app = typer.Typer(help="List, add and remove hospitals (clients) in params.yaml.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect client stores.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(clients_app, name="clients")
register_pretrain(app)  # `pretrain`, `pretrain-sam`, `pretrain-tinysam`
register_flower(app)  # `certs`, `server`, `node`: Flower deployment
register_deploy(app)  # `predict`: segment new images

PARAMS = typer.Option(Path("params.yaml"), "--params", "-p", help="Params file.")
ARTIFACTS = typer.Option(Path("artifacts"), "--artifacts", help="Artifacts root.")


@config_app.command("validate")
def config_validate(
    params: Path = typer.Argument(Path("params.yaml"), help="Params file to check."),
    check_paths: bool = typer.Option(True, help="Also check that every client's source path exists."),
) -> None:
    """Validate a params file: unknown keys, bad values, duplicate clients, missing paths (one line each)."""
    from dsfed.config import check_project
    from dsfed.generation.notes import generation_notes
    from dsfed.heads import class_head_notes

    cfg = check_project(params, check_paths=check_paths)
    holdout = f", held out: {cfg.data.holdout}" if cfg.data.holdout else ""
    typer.echo(f"{params}: OK ({len(cfg.clients)} clients: {', '.join(cfg.clients)}{holdout})")
    if cfg.samfed.enabled:
        s = cfg.samfed
        typer.echo(f"SAM-Fed: public set {', '.join(s.public)}, {len(s.clients)} unlabelled clients ({', '.join(s.clients)}), "
                   f"{len(s.variants)} variants ({', '.join(s.variants)})")
    for note in generation_notes(cfg, params.parent) + class_head_notes(cfg, params.parent):
        typer.echo(f"note: {note}")


@config_app.command("dump")
def config_dump(params: Path = typer.Argument(Path("params.yaml"), help="Params file to read.")) -> None:
    """Print the params with every default filled in (DVC needs each key a stage lists to be in the file)."""
    import yaml

    from dsfed.config import load_params

    typer.echo(yaml.safe_dump(load_params(params).model_dump(mode="json"), sort_keys=False), nl=False)


@app.command("prepare")
def prepare(
    client: str = typer.Argument(..., help="Client name from `clients:`."),
    params: Path = PARAMS,
    artifacts: Path = ARTIFACTS,
    overwrite: bool = typer.Option(False, help="Replace an existing store built from different inputs."),
) -> None:
    """Build one client's Zarr store without Prefect or DVC (the pipeline runs `dvc repro prepare`)."""
    from dsfed.config import load_params
    from dsfed.stages.prepare import run_prepare_stage

    out = run_prepare_stage(load_params(params), client, artifacts, root=params.parent, overwrite=overwrite)
    typer.echo(str(out))


def _open(target: str, artifacts: Path):  # noqa: ANN202 - returns ClientStore (imported lazily)
    from dsfed.data.store import ClientStore
    from dsfed.stages.prepare import store_path

    path = Path(target)
    return ClientStore(path if path.suffix == ".zarr" else store_path(artifacts, target))


@data_app.command("show")
def data_show(
    targets: list[str] = typer.Argument(None, help="Client names, or paths to .zarr stores (default: every client in params)."),
    params: Path = PARAMS,
    artifacts: Path = ARTIFACTS,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Summarise client stores: samples per split, sizes, foreground fraction per class."""
    from rich.console import Console
    from rich.table import Table

    from dsfed.config import load_params
    from dsfed.data.summary import store_summary

    targets = targets or list(load_params(params).clients)
    rows = [store_summary(_open(t, artifacts))["table"][0] for t in targets]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(*rows[0].keys())
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@data_app.command("preview")
def data_preview(
    targets: list[str] = typer.Argument(..., help="Client names, or paths to .zarr stores."),
    out: Path = typer.Option(Path("artifacts/preview.png"), "--out", "-o", help="PNG to write."),
    artifacts: Path = ARTIFACTS,
    per_client: int = typer.Option(8, help="Samples per client row."),
) -> None:
    """Write a PNG grid: a row of samples per client, mask outlines drawn in colour per class."""
    from dsfed.data.summary import preview_grid

    typer.echo(str(preview_grid([_open(t, artifacts) for t in targets], out, per_store=per_client)))


@app.command("preset")
def preset(
    name: str = typer.Argument(..., help="Preset name: paper-fundus (DSFedMed's fundus setting)."),
    data: Path = typer.Option(..., help="Dataset root (paper-fundus: the FedDG fundus folder holding Domain1..Domain4)."),
    sam: Path = typer.Option(..., help="Official SAM ViT-B checkpoint (sam_vit_b_01ec64.pth)."),
    tinysam: Path = typer.Option(..., help="Official TinySAM checkpoint (tinysam.pth)."),
    sd15: Path = typer.Option(..., help="Local diffusers Stable Diffusion 1.5 folder."),
    controlnet: Path | None = typer.Option(None, help="Optional diffusers ControlNet folder to start from (e.g. sd-controlnet-seg)."),
    holdout: str | None = typer.Option("Domain4", help="Domain held out for testing ('' for none)."),
    out: Path = typer.Option(Path("params.yaml"), "--out", "-o", help="Params file to write."),
    check_paths: bool = typer.Option(True, help="Refuse paths that do not exist."),
) -> None:
    """Write a named configuration into params.yaml (the previous file is kept as <out>.bak)."""
    import shutil

    import yaml

    from dsfed.config import parse_params
    from dsfed.presets import PresetPaths, build_preset

    try:
        raw = build_preset(name, PresetPaths(data=data, sam=sam, tinysam=tinysam, sd15=sd15, controlnet=controlnet, holdout=holdout or None))
    except KeyError as exc:
        raise DsfedError(str(exc.args[0])) from None
    if check_paths:
        for label, path in (("--data", data), ("--sam", sam), ("--tinysam", tinysam), ("--sd15", sd15), ("--controlnet", controlnet)):
            if path is not None and not path.exists():
                raise DsfedError(f"{label}: {path} does not exist")
    parse_params(raw, root=out.parent, check_paths=check_paths, source=str(out))  # refuse to write an invalid file
    from dsfed.io import atomic_path

    if out.exists():
        shutil.copy2(out, out.with_name(out.name + ".bak"))
    with atomic_path(out, overwrite=True) as tmp:
        tmp.write_text(f"# dsfed preset {name} (written by `dsfed preset`; the previous file is {out.name}.bak)\n"
                       + yaml.safe_dump(raw, sort_keys=False))
    typer.echo(f"{out}: preset {name} ({len(raw['clients'])} clients, held out: {raw['data']['holdout']})")


@app.command("ablate")
def ablate(
    sweep: list[str] = typer.Option(["table4", "lam", "rate", "batch_topk"], "--sweep", "-s",
                                    help="Which sets to run: table4 (the paper's 4 rows), lam, rate, batch_topk (repeatable)."),
    lam: list[float] = typer.Option([0.0, 0.25, 0.5, 0.75, 1.0], "--lam", help="lam values of the lam sweep (repeatable)."),
    rate: list[float] = typer.Option([0.2, 0.5, 0.8], "--rate", help="Selection rates of the rate sweep (repeatable)."),
    params: Path = PARAMS,
    artifacts: Path = ARTIFACTS,
) -> None:
    """Rerun the distillation per variant from the same starting models and gather one table
    (artifacts/ablation/table.md); `dvc repro report` then adds it to the report."""
    from dsfed.config import load_params
    from dsfed.stages.ablation import ablation_variants, run_ablation

    unknown = sorted(set(sweep) - {"table4", "lam", "rate", "batch_topk"})
    if unknown:
        raise DsfedError(f"--sweep: unknown set(s) {', '.join(unknown)} (table4, lam, rate, batch_topk)")
    cfg = load_params(params)
    for needed in (artifacts / "server_sam" / "model.json", artifacts / "federated" / cfg.distill.student / "model.json"):
        if not needed.is_file():
            raise DsfedError(f"{needed}: not found (run `dvc repro distill` first)")
    variants = ablation_variants(cfg, sweep, lam, rate)
    typer.echo(f"{len(variants)} variants: {', '.join(variants)}")
    table = run_ablation(cfg, artifacts, variants)
    typer.echo((artifacts / "ablation" / "table.md").read_text())
    typer.echo(f"table: {artifacts / 'ablation' / 'table.json'} ({len(table['rows'])} rows); `dvc repro report` adds it to the report")


@clients_app.command("list")
def clients_list(params: Path = PARAMS, as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")) -> None:
    """One line per client: name, source kind, path, held out or not."""
    from dsfed.clients import list_clients

    rows = list_clients(params)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['client']:<16} {row['kind']:<9} {row['path']}{'  (held out)' if row['held_out'] else ''}")


@clients_app.command("add")
def clients_add(
    name: str = typer.Argument(..., help="New client name (letters, digits, '_' and '-'; no '.')."),
    source: str | None = typer.Option(None, help="The source as inline YAML, e.g. \"{kind: feddg, path: /data/Fundus, domain: Domain2}\"."),
    like: str | None = typer.Option(None, help="Start from this client's source (then --set changes keys)."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE to set in the source (repeatable; VALUE is YAML)."),
    federate: bool = typer.Option(False, help="Also add it to a pinned `federated.clients` (the federated stages then retrain with it)."),
    params: Path = PARAMS,
) -> None:
    """Validate the source, add the client to params.yaml; `dvc repro` then runs only its stages and the
    server-side ones (with --federate, the federated ones too). A running Prefect server gets a
    `dsfed.client.joined` event, which starts the `redistill` deployment (see `make ui`)."""
    import yaml

    from dsfed.clients import add_client
    from dsfed.config import load_params

    if (source is None) == (like is None):
        raise DsfedError("give exactly one of --source YAML or --like CLIENT")
    if like is not None:
        current = load_params(params)
        if like not in current.clients:
            raise DsfedError(f"--like {like}: no such client (have: {', '.join(current.clients)})")
        spec = current.clients[like].source.model_dump(mode="json", exclude_defaults=True)
        spec["kind"] = current.clients[like].source.kind
    else:
        spec = yaml.safe_load(source or "")
        if not isinstance(spec, dict):
            raise DsfedError(f"--source: expected a mapping like {{kind: ..., path: ...}}, got {source!r}")
    for item in set_:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DsfedError(f"--set {item!r}: expected KEY=VALUE")
        spec[key] = yaml.safe_load(value)
    added = add_client(params, name, spec, federate=federate)
    outside = name not in added.federation
    typer.echo(f"{params}: added client {name} ({spec.get('kind')})"
               + (" outside the pinned federation (federated.clients): the federated models are kept" if outside else ""))
    _emit_joined(name, spec, params)


def _emit_joined(name: str, spec: dict, params: Path) -> None:
    """Send `dsfed.client.joined` to the Prefect server the environment names or that answers on :4200,
    through the pipeline package (``dsfed_pipeline``; the core library never imports Prefect)."""
    import os
    import subprocess

    root = params.resolve().parent
    done = subprocess.run([sys.executable, "-m", "dsfed_pipeline.flows.events", "joined", name, "--source", json.dumps(spec)],
                          cwd=root, capture_output=True, text=True, env={**os.environ})
    typer.echo(done.stdout.strip() or done.stderr.strip().splitlines()[-1] if (done.stdout or done.stderr) else "")


@clients_app.command("remove")
def clients_remove(name: str = typer.Argument(..., help="Client to remove."), params: Path = PARAMS) -> None:
    """Remove the client from params.yaml (its stage outputs stay in DVC's cache)."""
    from dsfed.clients import remove_client
    from dsfed.config import load_params

    federated = name in load_params(params).federation
    remove_client(params, name)
    typer.echo(f"{params}: removed client {name}; `dvc repro` updates the server-side stages"
               + (" and retrains the federated ones without it" if federated else ""))


@app.command("report")
def report(
    artifacts: Path = ARTIFACTS,
    params: Path = PARAMS,
    rebuild: bool = typer.Option(False, help="Rebuild the report from artifacts/eval now (what the report stage does)."),
) -> None:
    """Print where the report is and a short summary: test Dice per model and whether knowledge flowed."""
    from dsfed.config import load_params
    from dsfed.stages.report import build_report, flow_findings, read_eval

    cfg = load_params(params) if params.is_file() else None
    if rebuild:
        if cfg is None:
            raise DsfedError(f"{params}: no such params file (--rebuild needs it)")
        build_report(cfg, artifacts, params_path=params)
    index = artifacts / "report" / "index.html"
    if not index.is_file():
        raise DsfedError(f"{index}: no report yet (run `dvc repro report`, or `make demo`)")
    ev = read_eval(artifacts)
    holdout = ev.get("holdout")
    typer.echo(f"report: {index.resolve()}")
    typer.echo(f"summary: {(artifacts / 'report' / 'summary.md').resolve()}")
    typer.echo(f"test Dice (source-client mean{f' | held-out {holdout}' if holdout else ''}):")
    for key in ev.get("order", ev["models"]):
        m = ev["models"][key]
        held = f" | {m['holdout']['dice']:.3f}" if holdout and m.get("holdout") else ""
        typer.echo(f"  {m['label']:<48} {m['source_mean'].get('dice', float('nan')):.3f}{held}")
    for f in flow_findings(ev, cfg.distill.student if cfg else "fedtinysam"):
        b, a = f["source"]
        line = f"  {f['direction']}: source {b:.3f} -> {a:.3f} ({a - b:+.3f})"
        if holdout and holdout in f["clients"]:
            hb, ha = f["clients"][holdout]
            line += f", held-out {hb:.3f} -> {ha:.3f} ({ha - hb:+.3f})"
        typer.echo(line)


@app.command("ui")
def ui(
    port: int = typer.Option(4200, help="Port of the Prefect server on 127.0.0.1."),
    root: Path = typer.Option(Path("."), help="Project root (dvc.yaml, params.yaml)."),
    serve: bool = typer.Option(True, help="Serve the `pipeline` and `redistill` deployments (--no-serve: the UI only)."),
) -> None:
    """Start (or reuse) the Prefect server and UI on 127.0.0.1:PORT and serve the deployments: `pipeline`
    (on demand) and `redistill` (on `dsfed.client.joined` and on `redistill.cron`). Ctrl-C stops them."""
    import os

    if not (root / "dvc.yaml").is_file():
        raise DsfedError(f"{root.resolve()}: no dvc.yaml here (run from the project root, or give --root)")
    os.chdir(root)
    os.execv(sys.executable, [sys.executable, "-m", "dsfed_pipeline.flows.ui", "--port", str(port), "--root", ".",
                              "--serve" if serve else "--no-serve"])


@app.command("repro", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """Check params.yaml, then run `dvc repro [ARGS]` (e.g. `dsfed repro report`) with every stage reporting to one
    Prefect server: the one PREFECT_API_URL names, or the one dsfed started on 127.0.0.1:4200, else one started on a
    free loopback port for the run."""
    from dsfed.config import check_project
    from dsfed.orchestration.prefect_server import run_with_server

    targets = [a for a in ctx.args if not a.startswith("-")]
    check_project("params.yaml", whole=not targets)   # DVC's own message for params it cannot read is "unexpected error"
    raise typer.Exit(run_with_server([sys.executable, "-m", "dvc", "repro", *ctx.args]))


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"dsfed {version('dsfed')}")
        except PackageNotFoundError:   # a checkout on PYTHONPATH, not installed
            typer.echo("dsfed (not installed)")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Federated segmentation with a foundation model and lightweight clients (DSFedMed, SAM-Fed)."""


def main() -> None:
    """Entry point: a user error prints as one ``error: ...`` line per problem and exits 2; anything else as
    one line naming the log file that holds its traceback (``artifacts/logs/dsfed.log``), exit 1."""
    import logging

    from dsfed.error_log import debugging, error_lines, log_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        app()
    except Exception as exc:
        if debugging():
            raise
        command = " ".join(["dsfed", *sys.argv[1:3]])
        for line in error_lines(exc, command, log_file("dsfed")):
            print(line, file=sys.stderr)
        sys.exit(2 if isinstance(exc, DsfedError) else 1)
