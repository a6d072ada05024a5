"""The ``ha3-adapter`` command line.

Each command is thin: it parses arguments and calls the package. Errors from the package's
own family are printed as one line (with their JSON path or offset) and exit non-zero,
never as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

# OpenMP threads (torch's and faiss's libgomp) busy-wait after each parallel region by default.
# The service runs many short forward passes and searches beside its event loop on a few
# cores, and spinning threads take the CPU that the loop and the next query need (bench/query.py,
# 2 cores: tiny-CLIP text embed 2.6 → 1.1 ms, 16-client text QPS +20%; the real model's throughput is
# unchanged). libgomp reads this once, when torch or faiss is first imported: set it before.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

from adapter.errors import AdapterError  # noqa: E402

app = typer.Typer(help="HA3 image search on OpenSearch or an embedded engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
schema_app = typer.Typer(help="HA3 schema tools.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"


def fail(error: AdapterError) -> None:
    typer.echo(f"error {error.code}: {error}", err=True)
    raise typer.Exit(code=2)


@schema_app.command("convert")
def schema_convert(
    schema: Path = typer.Argument(..., help="HA3 schema JSON file (fields + indexs)"),
    report: bool = typer.Option(False, "--report", help="also print the translation report (stderr)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the index body here instead of stdout"),
    name: Optional[str] = typer.Option(None, "--name", help="index name (default: the file name)"),
    shards: int = typer.Option(1, help="number_of_shards"),
    replicas: int = typer.Option(1, help="number_of_replicas"),
) -> None:
    """Print the OpenSearch k-NN index body for an HA3 schema."""
    from adapter.schema import load_schema_file, translate

    try:
        spec = load_schema_file(schema, name)
        translation = translate(spec, shards=shards, replicas=replicas)
    except AdapterError as exc:
        fail(exc)
    text = json.dumps(translation.body, indent=2, ensure_ascii=False)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        if translation.training_body:
            train_path = out.with_name(out.stem + ".train.json")
            train_path.write_text(json.dumps(translation.training_body, indent=2) + "\n", encoding="utf-8")
            typer.echo(f"wrote {out} and {train_path}", err=True)
    else:
        typer.echo(text)
    if translation.training_body:
        typer.echo(
            f"note: Qc maps to a trained faiss IVF model. Before PUT /{translation.index_name}, run\n"
            f"  POST /_plugins/_knn/models/{translation.model_id}/_train\n"
            f"  {json.dumps(translation.training_body)}\n"
            "on a training index holding sample vectors (the adapter's rebuild does this for you).",
            err=True,
        )
    if report:
        typer.echo(translation.report_text(), err=True)


@app.command()
def demo(
    images: Optional[Path] = typer.Option(None, "--images", help="a folder of images to use instead of the shipped sample photos (subfolders become cate_id 1, 2, ...)"),
    opensearch: Optional[str] = typer.Option(None, "--opensearch", help="run against this OpenSearch cluster URL instead of the embedded engine"),
    port: int = typer.Option(8080, "--port", help="port of the local service"),
    data_dir: Path = typer.Option(Path("ha3-demo-data"), "--data-dir", help="where the demo keeps its table; a second run reuses it"),
    models: Optional[Path] = typer.Option(None, "--models", help="model registry config (default: the built-in starter model)"),
    no_serve: bool = typer.Option(False, "--no-serve", help="ingest, print the summary and exit (for scripts and CI)"),
) -> None:
    """Create a table from the seed's schema, ingest real photos, and serve the search page."""
    from adapter.demo import run_demo

    try:
        summary = run_demo(data_dir=data_dir, images=images, opensearch=opensearch, port=port,
                           models=models, serve=not no_serve, echo=typer.echo)
    except AdapterError as exc:
        fail(exc)
    if no_serve:
        typer.echo(json.dumps(summary))


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="bind address (default from config, else 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, help="port (default from config, else 8080)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="embedded engine directory and service state"),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML: engine, models, users, limits"),
    log_level: str = typer.Option("info", help="uvicorn/access log level"),
) -> None:
    """Serve the HA3-compatible HTTP API (queries, vector service, push, tables)."""
    from adapter.config import Settings
    from adapter.logs import configure_logging
    from adapter.runtime import Runtime
    from adapter.server.app import create_app, uvicorn_config
    from adapter.server.listen import bind_port, serve_on

    try:
        settings = Settings.load(config, overrides={"data_dir": data_dir, "host": host, "port": port})
        listener = bind_port(settings.host, settings.port)  # a busy port fails now, not after loading
        if not settings.users:
            typer.echo("warning: no users configured (set HA3_ADAPTER_USERNAME/HA3_ADAPTER_PASSWORD or "
                       "`users:` in --config); the API is open", err=True)
        configure_logging(log_level, "%(message)s")
        runtime = Runtime.from_settings(settings)
    except AdapterError as exc:
        fail(exc)
    # our own structured access log replaces uvicorn's (access_log=False in uvicorn_config)
    serve_on(uvicorn_config(create_app(runtime), settings, log_level=log_level), listener)


@app.command("hash-password")
def hash_password_cmd(
    password: Optional[str] = typer.Option(None, "--password", help="the password (avoid: it stays in your shell "
                                           "history; leave it out to be asked, or pipe it in on stdin)"),
) -> None:
    """Print a scrypt hash for a `users:` entry's password_hash.

    Without --password: asks twice (hidden) on a terminal, else reads stdin's first line."""
    from adapter.config import hash_password

    if password is None:
        password = read_password()
    typer.echo(hash_password(password))


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def read_password() -> str:
    """A password from a hidden, confirmed prompt (on stderr, so stdout holds only the hash),
    or the first line of stdin when it is not a terminal; never from the command line."""
    if stdin_is_terminal():
        return typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        typer.echo("error: no password on stdin (give it as its first line, or run this on a terminal "
                   "to be asked for it)", err=True)
        raise typer.Exit(code=2)
    return line


@app.command()
def rebuild(
    pipeline: Path = typer.Argument(..., help="pipeline YAML or JSON (see pipelines/; one stored in a data "
                                              "directory's pipelines/ folder runs as the admin page runs it)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="rebuild into the embedded engine in this data "
                                            "directory (as `serve --data-dir` uses it) instead of the pipeline's "
                                            "engine section"),
    progress: str = typer.Option("auto", help="auto (bar on a terminal, log lines otherwise) | bar | log | none"),
    restart: bool = typer.Option(False, "--restart", help="discard an interrupted run's checkpoint instead of resuming"),
    watch_s: Optional[float] = typer.Option(None, "--watch", help="then keep watching the table files; rebuild "
                                                                    "when they change (poll every N seconds)"),
) -> None:
    """Rebuild a table from its pipeline into a new generation, then switch searches to it."""
    from adapter.ingest.data_dir import load_pipeline
    from adapter.ingest.rebuild import (RebuildCancelled, abort_rebuild, parts_from_pipeline, rebuild as run_rebuild,
                                        watch)
    from adapter.logs import configure_logging

    configure_logging("info", "%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_pipeline(pipeline, data_dir)
        parts = parts_from_pipeline(config)
        try:
            if restart:
                abort_rebuild(parts, config)
            if watch_s is not None:
                def show(report) -> None:
                    typer.echo(json.dumps({k: v for k, v in report.to_dict().items() if k != "failures"}, default=str))

                try:
                    watch(parts, config, interval_s=watch_s, progress=progress, on_report=show)
                except (KeyboardInterrupt, RebuildCancelled):
                    pass
                return
            report = run_rebuild(parts, config, progress=progress)
        finally:
            parts.engine.close()
            getattr(parts.embedder, "close", lambda: None)()
    except AdapterError as exc:
        fail(exc)
    summary = report.to_dict()
    summary["failures"] = summary["failures"][:20]  # the full list is in report_file
    typer.echo(json.dumps(summary, indent=2, default=str, ensure_ascii=False))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
