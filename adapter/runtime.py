"""The service's running state: engine, embedder, secrets, tasks and settings in one place.

Everything that serves requests (HTTP routes, ingest, the CLI) takes a ``Runtime`` instead
of reaching for globals, so tests build one over a temp directory and a tiny model.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from adapter.config import Settings
from adapter.embed.base import Embedder
from adapter.errors import ConfigError, QueryError, SchemaError
from adapter.ingest.parts import IngestParts
from adapter.ingest.tasks import TaskRegistry
from adapter.plan.engine import Engine
from adapter.schema.model import ObjectStoreSpec, TableSpec
from adapter.schema.parse import parse_schema
from adapter.sources.access import AccessRules

if TYPE_CHECKING:  # the server sets metrics; the runtime does not depend on it
    from adapter.server.observe import Metrics


TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,127}")


class SecretStore:
    """Object-store credentials per table and field, in ``<dir>/secrets.json`` (mode 0600).

    Engines persist only ``TableSpec.public_dict()`` (no credentials); this store keeps the
    keys so that ingest can read the buckets. Values never appear in reprs or logs.
    """

    FILE_NAME = "secrets.json"

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / self.FILE_NAME
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, dict[str, str]]] = self._read()

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r}, tables={sorted(self._data)})"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"secrets file unreadable: {type(exc).__name__}", str(self.path)) from None
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Created 0600 from the start: the file is never readable by others, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self._data, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def put_spec(self, spec: TableSpec) -> None:
        """Keep every object-store field of ``spec`` with its credentials (replacing old ones)."""
        stores: dict[str, dict[str, str]] = {}
        for name, store in spec.object_store_fields().items():
            if store.has_credentials:
                stores[name] = {
                    "content_type": store.content_type, "endpoint": store.endpoint, "bucket": store.bucket,
                    "access_key_id": store.access_key_id.get_secret_value() if store.access_key_id else "",
                    "access_key_secret": store.access_key_secret.get_secret_value() if store.access_key_secret else "",
                }
        with self._lock:
            if stores:
                self._data[spec.name] = stores
            else:
                self._data.pop(spec.name, None)
            self._write()

    def get(self, table: str) -> dict[str, dict[str, str]]:
        """``{field: {endpoint, bucket, access_key_id, access_key_secret, ...}}`` (may be empty)."""
        with self._lock:
            return {k: dict(v) for k, v in self._data.get(table, {}).items()}

    def object_store(self, table: str, field: str | None = None) -> ObjectStoreSpec | None:
        """The object store (with credentials) of ``field`` or the table's first stored one;
        None when the table keeps no credentials (ingest then uses environment credentials)."""
        stores = self.get(table)
        entry = stores.get(field) if field else next(iter(stores.values()), None)
        return ObjectStoreSpec.model_validate(entry) if entry else None

    def delete(self, table: str) -> None:
        with self._lock:
            if self._data.pop(table, None) is not None:
                self._write()

    def with_credentials(self, spec: TableSpec) -> TableSpec:
        """``spec`` with its object-store fields' credentials restored from this store."""
        creds = self.get(spec.name)
        if not creds:
            return spec
        fields = []
        for f in spec.fields:
            c = creds.get(f.name)
            if c and f.object_store is not None:
                keys = {k: c[k] for k in ("access_key_id", "access_key_secret") if k in c}
                store = ObjectStoreSpec.model_validate({**f.object_store.model_dump(), **keys})
                f = f.model_copy(update={"object_store": store})
            fields.append(f)
        return spec.model_copy(update={"fields": fields})


@dataclass
class Runtime:
    """Engine + embedding service + secrets + task registry + settings."""

    engine: Engine
    embedder: Embedder | None
    secrets: SecretStore
    tasks: TaskRegistry
    settings: Settings
    # The folders, endpoints and keys clients may make the service use (sources/access.py).
    access: AccessRules = field(init=False)
    # Request counters; the server sets them when it serves this runtime (adapter.server.app).
    metrics: "Metrics | None" = None

    def __post_init__(self) -> None:
        self.access = AccessRules.from_settings(self.settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        from adapter.embed.registry import ModelRegistry
        from adapter.embed.service import EmbeddingService
        from adapter.engines.factory import open_engine
        from adapter.ingest.journal import discard_stale_journals
        from adapter.ingest.service_pipeline import ingest_dir

        engine = open_engine(settings.engine)
        state = settings.state_dir
        state.mkdir(parents=True, exist_ok=True)
        registry = ModelRegistry.from_config(settings.models, data_dir=state)
        # Journals whose rebuild switched just before a crash: their pushes are all live.
        discard_stale_journals(engine, ingest_dir(state))
        return cls(engine, EmbeddingService(registry), SecretStore(state), TaskRegistry(), settings)

    def ingest_parts(self) -> IngestParts:
        """What push and rebuild use: this service's engine, embedder, rules, keys and journals."""
        return IngestParts(self.engine, self.embedder, access=self.access, secrets=self.secrets,
                           state_dir=Path(self.settings.state_dir))

    # -- tables ------------------------------------------------------------------------
    def create_table(self, name: str, schema_json: str | bytes | dict) -> TableSpec:
        """Parse an HA3 schema, create the table, keep its credentials in the SecretStore."""
        if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
            raise SchemaError("table name must be 1-128 letters, digits, '_' or '-', starting with a letter "
                              "or '_'", "$.name")
        spec = self.parse_schema(schema_json, name)
        self.engine.create_table(spec)
        try:
            self.secrets.put_spec(spec)
            self.store_schema(spec.name, schema_json)
        except Exception:
            self.engine.drop_table(spec.name)
            raise
        return spec

    def parse_schema(self, schema_json: str | bytes | dict, name: str) -> TableSpec:
        """An uploaded schema as a TableSpec this service can serve: a configured model, and
        object stores inside what the operator allows (endpoint allow-list, bucket folders)."""
        spec = parse_schema(schema_json, name)
        self._check_model(spec)
        for field_name, store in spec.object_store_fields().items():
            self.access.check_store_spec(store, f"$.fields[{field_name}].user_defined_param.oss_endpoint")
        return spec

    def store_schema(self, name: str, schema_json: str | bytes | dict) -> None:
        """Keep the uploaded schema (credential values blanked) for later rebuilds."""
        doc = json.loads(schema_json) if isinstance(schema_json, (str, bytes)) else json.loads(json.dumps(schema_json))
        for key in ("schema", "table", "index_schema"):
            if "fields" not in doc and isinstance(doc.get(key), (dict, str)):
                inner = doc[key]
                doc = json.loads(inner) if isinstance(inner, str) else inner
        for entry in doc.get("fields", []) if isinstance(doc, dict) else []:
            params = entry.get("user_defined_param") if isinstance(entry, dict) else None
            if isinstance(params, dict):
                for secret in ("oss_access_key", "oss_secret", "access_key_id", "access_key_secret"):
                    if secret in params:
                        params[secret] = ""
        directory = Path(self.settings.state_dir) / "schemas"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")

    def drop_table(self, name: str) -> None:
        self.engine.drop_table(name)
        self.secrets.delete(name)
        (Path(self.settings.state_dir) / "schemas" / f"{name}.json").unlink(missing_ok=True)

    def spec(self, table: str) -> TableSpec:
        """The public spec (no credentials). NotFoundError for an unknown table."""
        return self.engine.get_spec(table)

    def spec_with_secrets(self, table: str) -> TableSpec:
        """The spec with object-store credentials restored (for ingest only; never log it)."""
        return self.secrets.with_credentials(self.engine.get_spec(table))

    def model_for(self, table: str) -> str:
        """The embedding model name a table's built-in ``vector_model`` maps to."""
        spec = self.engine.get_spec(table)
        if spec.embedding is None:
            raise QueryError(f"table '{table}' has no built-in vector model (vector_model); "
                             "query it with vectors instead of content", "$.tableName")
        return spec.embedding.model

    def _check_model(self, spec: TableSpec) -> None:
        if spec.embedding is None or self.embedder is None:
            return
        registry = getattr(self.embedder, "registry", None)  # EmbeddingService's; test doubles have none
        names = registry.names() if registry is not None else None
        if names is not None and spec.embedding.model not in names:
            raise SchemaError(f"vector_model '{spec.embedding.model}' is not configured on this "
                              f"service (configured: {', '.join(sorted(names)) or 'none'})",
                              f"$.fields[{spec.vector_field}].user_defined_param.vector_model")

    def close(self) -> None:
        self.engine.close()
        close_embedder = getattr(self.embedder, "close", None)  # the Embedder protocol has no close
        if close_embedder is not None:
            close_embedder()
