"""Opening the object store a table's images live in: one place for every reader.

Push, rebuild and the search page's thumbnails all open stores here, so the same rules
hold for each: the folder or endpoint must be inside what the operator allows
(``AccessRules``), and the keys stored for a table's oss field are used only for the
endpoint and bucket they were stored for (``sources.access.open_table_store``).
"""

from __future__ import annotations

from adapter.errors import AccessError, ConfigError, SourceError
from adapter.ingest.parts import IngestParts
from adapter.ingest.pipeline import PipelineConfig
from adapter.schema.model import FieldSpec, ObjectStoreSpec, TableSpec
from adapter.sources.access import UnavailableStore, open_table_store
from adapter.sources.objectstore import AccessDeniedError, ObjectStore, ObjectStoreError


def stored_credentials(parts: IngestParts, table: str, field: str) -> ObjectStoreSpec | None:
    """The SecretStore's entry for a table's oss field; None without one (environment keys)."""
    return parts.secrets.object_store(table, field) if parts.secrets is not None else None


def field_store(parts: IngestParts, table: str, field: FieldSpec, where: str) -> ObjectStore:
    """The store behind one oss field of ``table``, with the keys stored for exactly it.
    AccessError for a place outside the rules, SourceError for one that cannot be opened."""
    return open_table_store(parts.access, schema=field.object_store,
                            stored=stored_credentials(parts, table, field.name), where=where)


def push_store(parts: IngestParts, spec: TableSpec) -> ObjectStore | None:
    """The store for a pushed table's oss source field (None: the table has none).

    A store that may not be opened (a folder or endpoint outside the operator's rules,
    keys stored for another place) fails each document that needs it, with the reason,
    instead of the whole push."""
    source = spec.source_field
    if source is None or source.object_store is None:
        return None
    try:
        return field_store(parts, spec.name, source, f"$.fields[{source.name}].user_defined_param")
    except AccessError as exc:
        return UnavailableStore(AccessDeniedError(exc.message, exc.location))
    except SourceError as exc:
        return UnavailableStore(ObjectStoreError(exc.message, exc.location))


def open_image_store(pipeline: PipelineConfig, spec: TableSpec, parts: IngestParts) -> ObjectStore | None:
    """The store a rebuild reads images from: the pipeline's object_store over the schema's
    oss params (None for Base64 or vector sources)."""
    image = pipeline.source.image
    source = spec.source_field
    if image.kind in ("base64", "vector"):
        return None
    schema_store = source.object_store if source is not None else None
    if image.object_store is None and schema_store is None:
        if image.kind == "object_store":
            raise ConfigError("image kind object_store needs source.image.object_store or an oss source field",
                              "$.source.image.object_store")
        return None
    stored = stored_credentials(parts, pipeline.table, source.name) if source is not None else None
    return open_table_store(parts.access, schema=schema_store, stored=stored, pipeline=image.object_store,
                            where="$.source.image.object_store")
