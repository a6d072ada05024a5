"""``ha3-adapter demo``: a table, real photos, the service and its page, in one command.

Works offline on a fresh machine: the photos are the sample photographs that installed
packages ship (scikit-image's ``skimage/data`` and scikit-learn's ``sklearn/datasets/images``,
read as plain files, no download), or any folder given with ``--images``. The table is the
seed's object-store schema (``mappings/image_search_oss.json``) with its bucket pointed at a
local directory (``file://<data-dir>/bucket``): the photos are copied there (as JPEG) and the
table holds their object keys, exactly like OSS paths, so the page's thumbnails are read
server-side the same way a real bucket's are. A second run finds the data directory and
reuses it.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from PIL import Image

from adapter.errors import ConfigError, ImageError

if TYPE_CHECKING:  # the demo opens a Runtime only when it runs
    from adapter.runtime import Runtime

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"
DEMO_SCHEMA = MAPPINGS_DIR / "image_search_oss.json"
DEMO_TABLE = "image_search"
DEMO_USER = "demo"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
# Stored images are re-encoded to this longest side: the model sees 224 px, the page 256 px,
# and a small Base64 keeps the table (and every thumbnail read) light.
STORED_LONGEST_SIDE = 640
PUSH_BATCH = 4

CATEGORIES = {1: "people & animals", 2: "objects & vehicles", 3: "space & science",
              4: "textures & text", 5: "places & plants"}

# (package, path inside it, cate_id, what it shows). Only photographs: no logos or test charts.
SHIPPED_PHOTOS: list[tuple[str, str, int, str]] = [
    ("skimage", "data/astronaut.png", 1, "astronaut Eileen Collins in a portrait"),
    ("skimage", "data/chelsea.png", 1, "a tabby cat"),
    ("skimage", "data/camera.png", 1, "a man with a camera on a tripod (grayscale)"),
    ("skimage", "data/coffee.png", 2, "a cup of coffee on a saucer"),
    ("skimage", "data/rocket.jpg", 2, "a rocket on the launch pad"),
    ("skimage", "data/motorcycle_left.png", 2, "a motorcycle"),
    ("skimage", "data/coins.png", 2, "old coins (grayscale)"),
    ("skimage", "data/clock_motion.png", 2, "a clock, motion blurred (grayscale)"),
    ("skimage", "data/hubble_deep_field.jpg", 3, "galaxies in the Hubble deep field"),
    ("skimage", "data/moon.png", 3, "the surface of the moon (grayscale)"),
    ("skimage", "data/retina.jpg", 3, "a retina photographed through the eye"),
    ("skimage", "data/ihc.png", 3, "a stained tissue sample under a microscope"),
    ("skimage", "data/cell.png", 3, "a cell under a microscope (grayscale)"),
    ("skimage", "data/brick.png", 4, "a brick wall (grayscale)"),
    ("skimage", "data/grass.png", 4, "grass (grayscale)"),
    ("skimage", "data/gravel.png", 4, "gravel (grayscale)"),
    ("skimage", "data/page.png", 4, "a page of printed text (grayscale)"),
    ("sklearn", "datasets/images/china.jpg", 5, "a Chinese temple among trees"),
    ("sklearn", "datasets/images/flower.jpg", 5, "a flower"),
]

# Searches the banner suggests: concepts among ImageNet's classes, which the offline starter
# `clip` (an ImageNet backbone) places first among these photos (tests/test_demo.py checks
# each); most other photos here (micrographs, grayscale textures, deep space) are outside
# what it learned. (query, the photo it finds, keyed as ``stored_gallery`` keys them)
STARTER_QUERIES: tuple[tuple[str, str], ...] = (
    ("a cat", "skimage:data/chelsea.png"),
    ("a cup of coffee", "skimage:data/coffee.png"),
    ("a motorcycle", "skimage:data/motorcycle_left.png"),
    ("a clock", "skimage:data/clock_motion.png"),
    ("a photographer", "skimage:data/camera.png"),
    ("a temple", "sklearn:datasets/images/china.jpg"),
)


@dataclass(frozen=True)
class DemoPhoto:
    pk: int
    path: Path
    cate_id: int
    caption: str


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (skimage imports are slow)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def shipped_photos() -> list[DemoPhoto]:
    """The sample photographs installed packages ship, numbered from 1 in a fixed order."""
    photos: list[DemoPhoto] = []
    for pk, (package, rel, cate_id, caption) in enumerate(SHIPPED_PHOTOS, start=1):
        root = package_dir(package)
        if root is not None and (root / rel).is_file():
            photos.append(DemoPhoto(pk, root / rel, cate_id, caption))
    return photos


def stored_gallery() -> dict[str, Image.Image]:
    """The shipped photos as the demo's bucket stores them (``encode_jpeg``), keyed
    "package:path": what a model is measured against (bench/quality.py, STARTER_QUERIES)."""
    gallery: dict[str, Image.Image] = {}
    for package, rel, _, _ in SHIPPED_PHOTOS:
        root = package_dir(package)
        if root is not None and (root / rel).is_file():
            gallery[f"{package}:{rel}"] = Image.open(io.BytesIO(encode_jpeg(root / rel))).convert("RGB")
    return gallery


def folder_photos(folder: Path) -> list[DemoPhoto]:
    """Every image under ``folder``; each first-level subfolder becomes one cate_id (1, 2, ...)."""
    if not folder.is_dir():
        raise ConfigError(f"--images must be a folder of images: {folder} is not a directory", "--images")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    subdirs = sorted({p.relative_to(folder).parts[0] for p in files if len(p.relative_to(folder).parts) > 1})
    cate_of = {name: i for i, name in enumerate(subdirs, start=1)}
    photos = []
    for pk, path in enumerate(files, start=1):
        parts = path.relative_to(folder).parts
        photos.append(DemoPhoto(pk, path, cate_of.get(parts[0], 0) if len(parts) > 1 else 0, path.stem))
    if not photos:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}", "--images")
    return photos


def encode_jpeg(path: Path) -> bytes:
    """The photo as the JPEG the bucket stores (RGB, longest side STORED_LONGEST_SIDE)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((STORED_LONGEST_SIDE, STORED_LONGEST_SIDE), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=90)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot read image {path.name}: {exc}") from None
    return out.getvalue()


def bucket_dir(data_dir: Path) -> Path:
    return data_dir / "bucket"


def demo_schema(bucket: Path, schema_path: Path = DEMO_SCHEMA) -> dict[str, Any]:
    """The seed's OSS schema with its bucket pointed at a local directory (no credentials)."""
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    for field in schema["fields"]:
        params = field.get("user_defined_param") or {}
        if params.get("content_type") == "oss":
            field["user_defined_param"] = {"content_type": "oss", "oss_endpoint": bucket.resolve().as_uri(),
                                           "oss_bucket": "demo", "oss_access_key": "", "oss_secret": ""}
    return schema


# --------------------------------------------------------------------------- settings

def demo_password(data_dir: Path) -> str:
    """The demo user's password: made once, kept in the data directory (mode 0600)."""
    path = data_dir / "demo-user.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["password"]
    data_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(9)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"username": DEMO_USER, "password": password}, fh)
    return password


def demo_settings(data_dir: Path, *, opensearch: str | None, port: int, models: Path | None,
                  password: str, user: str = DEMO_USER) -> Any:
    """The demo's service settings. The embedded engine lives in the data directory itself,
    beside the bucket, schemas and pipelines, as ``ha3-adapter serve --data-dir`` lays it out,
    so that command opens the demo's directory as it is."""
    from adapter.config import Settings

    engine: dict[str, Any] = {"kind": "embedded", "data_dir": str(data_dir)}
    if opensearch:
        # refresh: a demo's writes are few, and each one is searchable (and counted) at once,
        # as on the embedded engine, instead of after the next 1 s index refresh.
        engine = {"kind": "opensearch", "url": opensearch, "data_dir": str(data_dir), "refresh": True}
    return Settings.model_validate({
        "engine": engine,
        "data_dir": str(data_dir),
        "models": str(models) if models else None,
        "users": [{"username": user, "password": password}],
        "host": "127.0.0.1",
        "port": port,
        "warm_up": False,  # run_demo warms the models itself, before it prints the banner
    })


# --------------------------------------------------------------------------- ingest

def write_source(data_dir: Path, photos: list[DemoPhoto], bucket: Path, table: str = DEMO_TABLE) -> Path:
    """The business table (CSV: id, cate_id, object key) and the pipeline that rebuilds the
    demo table from it, at ``<data-dir>/pipelines/<table>.json`` — where the admin view's
    Rebuild button finds it (see adapter.server.routes_ui.stored_pipeline)."""
    import csv

    items = data_dir / "items.csv"
    with items.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "cate_id", "vector_source_image"])
        for photo in photos:
            writer.writerow([photo.pk, photo.cate_id, f"images/{photo.pk}.jpg"])
    # No schema or engine here: the service (and `ha3-adapter rebuild`, for a pipeline inside
    # a data directory) use the table's stored schema and the directory's own engine.
    pipeline = {"table": table,
                "source": {"table": {"path": str(items.resolve())},
                           "image": {"kind": "object_store",
                                     "object_store": {"url": bucket.resolve().as_uri()}}},
                "batch_size": 8}
    path = data_dir / "pipelines" / f"{table}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pipeline, indent=2) + "\n", encoding="utf-8")
    return path


def ensure_table(runtime: Runtime, bucket: Path, table: str = DEMO_TABLE) -> bool:
    """Create the demo table unless it exists; True when created now."""
    if table in runtime.engine.list_tables():
        return False
    bucket.mkdir(parents=True, exist_ok=True)
    runtime.create_table(table, demo_schema(bucket))
    return True


def missing_photos(runtime: Runtime, photos: list[DemoPhoto], table: str = DEMO_TABLE) -> list[DemoPhoto]:
    """Photos whose key the table lacks (what a second run still has to ingest)."""
    present = {hit.pk for hit in runtime.engine.get(table, [p.pk for p in photos], output_fields=[])}
    present |= {int(pk) for pk in present if isinstance(pk, str) and pk.isdigit()}
    return [p for p in photos if p.pk not in present]


def ingest_photos(runtime: Runtime, photos: list[DemoPhoto], bucket: Path, *, table: str = DEMO_TABLE,
                  on_batch: Callable[[int], None] = lambda n: None) -> tuple[int, list[str]]:
    """Copy photos into the bucket and push their keys as HA3 ``add`` commands in small
    batches (the service reads and embeds each image); (written, failure lines)."""
    from adapter.ingest.push import apply_push
    from adapter.sources.objectstore import open_store

    store = open_store(bucket.resolve().as_uri())
    written, failures = 0, []
    for start in range(0, len(photos), PUSH_BATCH):
        batch = photos[start:start + PUSH_BATCH]
        commands = []
        for photo in batch:
            key = f"images/{photo.pk}.jpg"
            try:
                (bucket / key).parent.mkdir(parents=True, exist_ok=True)
                (bucket / key).write_bytes(encode_jpeg(photo.path))
            except ImageError as exc:
                failures.append(f"{photo.pk}: {exc}")
                continue
            commands.append({"cmd": "add", "fields": {"id": photo.pk, "cate_id": photo.cate_id,
                                                      "vector_source_image": key}})
        report = apply_push(runtime, table, commands, store=store) if commands else None
        ok, bad = _push_counts(report)
        written += ok
        failures.extend(bad)
        on_batch(len(batch))
    return written, failures


def _push_counts(report: Any) -> tuple[int, list[str]]:
    if report is None:
        return 0, []
    if isinstance(report, dict):
        fails = report.get("failures") or report.get("errors") or []
        return int(report.get("written", report.get("indexed", 0))), [str(f) for f in fails]
    fails = getattr(report, "failures", []) or []
    lines = [f"{getattr(f, 'pk', '?')}: {getattr(f, 'message', None) or getattr(f, 'reason', f)}" for f in fails]
    return int(getattr(report, "written", getattr(report, "indexed", 0))), lines


# --------------------------------------------------------------------------- what to print

def examples(base_url: str, user: str, password: str, table: str = DEMO_TABLE, text: str = "a cat",
             data_dir: Path | None = None, models: Path | None = None) -> str:
    """Ready-to-paste curl and SDK lines for the running demo, and how to carry on without it
    (``data_dir``: the demo's directory; ``models``: its --models file, which both need too)."""
    b64 = base64.b64encode(text.encode("utf-8")).decode("ascii")
    query = (f"config=start:0,hit:5,format:json&&query=vector:'{b64}&modal=text&n=5'"
             f"&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster={table}")
    host = base_url.split("://", 1)[1]
    port = host.rsplit(":", 1)[-1]
    with_models = f"HA3_ADAPTER_MODELS={shlex.quote(str(models))} " if models else ""
    own = "" if data_dir is None else f"""
The same data directory without the demo (it holds the table, its photos and its pipeline):
  {with_models}HA3_ADAPTER_USERNAME={user} HA3_ADAPTER_PASSWORD={password} ha3-adapter serve --data-dir {shlex.quote(str(data_dir))} --port {port}
  {with_models}ha3-adapter rebuild {shlex.quote(str(data_dir / "pipelines" / f"{table}.json"))}    # from {data_dir / "items.csv"}, with the service stopped
"""
    return f"""\
Search page:   {base_url}/ui/   (user {user}, password {password})
Try searching: {", ".join(query for query, _ in STARTER_QUERIES)}

HA3 query string, text "{text}" (Base64 {b64}):
  curl -u {user}:{password} -G '{base_url}/query' --data-urlencode "query={query}"

Vector service, the same search:
  curl -u {user}:{password} -H 'Content-Type: application/json' \\
    '{base_url}/vector-service/inference-query' \\
    -d '{{"tableName": "{table}", "content": "{text}", "modal": "text", "topK": 5, "outputFields": ["cate_id"]}}'

Python SDK (pip install alibabacloud-ha3engine):
  from alibabacloud_ha3engine import models, client
  ha3 = client.Client(models.Config(endpoint="{host}", instance_id="", protocol="http",
                                    access_user_name="{user}", access_pass_word="{password}"))
  query = "{query}"
  print(ha3.search(models.SearchRequestModel({{}}, models.SearchQuery(query=query))).body)
{own}"""


def photo_source_note(images: Path | None, photos: Iterable[DemoPhoto]) -> str:
    photos = list(photos)
    if images:
        return f"{len(photos)} images from {images}"
    return f"{len(photos)} sample photos shipped by scikit-image and scikit-learn"


# --------------------------------------------------------------------------- the command

def run_demo(*, data_dir: Path, images: Path | None = None, opensearch: str | None = None,
             port: int = 8080, models: Path | None = None, serve: bool = True,
             echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Create (or reuse) the demo table, ingest what is missing, then serve until Ctrl-C."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from adapter.runtime import Runtime
    from adapter.server.app import warm_up
    from adapter.server.listen import bind_port

    # The port first: a busy one is reported before anything is printed, created or loaded.
    listener = bind_port("127.0.0.1", port) if serve else None
    runtime = None
    try:
        data_dir = data_dir.expanduser().resolve()
        photos = folder_photos(images) if images else shipped_photos()
        if not photos:
            raise ConfigError("no sample photos found (scikit-image and scikit-learn ship them; "
                              "`pip install scikit-image`) — or give a folder with --images", "--images")
        reused = (data_dir / "demo-user.json").is_file()
        password = demo_password(data_dir)
        settings = demo_settings(data_dir, opensearch=opensearch, port=port, models=models, password=password)
        runtime = Runtime.from_settings(settings)
        bucket = bucket_dir(data_dir)
        created = ensure_table(runtime, bucket)
        todo = missing_photos(runtime, photos)
        echo(f"data directory {data_dir} ({'reused' if reused else 'new'}); table '{DEMO_TABLE}' "
             f"{'created from ' + DEMO_SCHEMA.name if created else 'exists'}; "
             f"{photo_source_note(images, photos)}, {len(todo)} to ingest")
        written, failures = 0, []
        if todo:
            with Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
                task = bar.add_task("ingest", total=len(todo))
                written, failures = ingest_photos(runtime, todo, bucket, on_batch=lambda n: bar.advance(task, n))
        for line in failures:
            echo(f"  not ingested: {line}")
        write_source(data_dir, photos, bucket)
        doc_count = runtime.engine.count(DEMO_TABLE)
        echo(f"table '{DEMO_TABLE}': {doc_count} documents")
        summary = {"data_dir": str(data_dir), "created": created, "ingested": written,
                   "failures": failures, "doc_count": doc_count, "photos": len(photos)}
        if not serve:
            return summary
        echo("loading the model...")
        # All before the banner: the first query a user pastes is as fast as the next.
        warm_up(runtime)
        app = demo_app(runtime, DEMO_USER, password)
        # `serve --data-dir` opens an embedded engine: the way on without the demo, unless on OpenSearch
        carry_on = None if opensearch else display_path(data_dir)
        echo("\n" + examples(f"http://127.0.0.1:{port}", DEMO_USER, password, data_dir=carry_on, models=models))
        serve_app(app, listener)
        return summary
    finally:
        if runtime is not None:
            runtime.close()
        if listener is not None:
            listener.close()


def display_path(path: Path) -> Path:
    """``path`` as the user would type it: relative to the working directory when inside it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def demo_app(runtime: Runtime, user: str, password: str) -> Any:
    """The service's app, with the banner's login already verified: scrypt (about 50 ms) is
    paid once per credential, and would otherwise be paid by the first query a user pastes."""
    from adapter.server.app import create_app

    app = create_app(runtime)
    app.state.auth.authenticate("Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    return app


def serve_app(app: Any, listener: Any) -> None:
    """Run the service (with its page) on the bound localhost socket until interrupted."""
    from adapter.server.app import uvicorn_config
    from adapter.server.listen import serve_on

    serve_on(uvicorn_config(app, app.state.settings, log_level="warning"), listener)
