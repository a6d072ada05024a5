"""Thumbnails for the search page: read a document's source image, shrink it.

The image comes from where ingest found it: the object store named by the table's schema
(read here, on the server, with the table's stored credentials) or the Base64 text in the
table itself. The browser only ever sees the resized JPEG, never a bucket URL or a key.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

from PIL import Image

from adapter.embed.images import decode_base64
from adapter.errors import NotFoundError, SchemaError
from adapter.ingest.image_stores import field_store
from adapter.runtime import Runtime
from adapter.schema.model import FieldSpec, FieldType, TableSpec
from adapter.sources.objectstore import ObjectStore

MIN_SIZE, MAX_SIZE = 16, 1024


def source_field(spec: TableSpec) -> FieldSpec:
    """The field that holds each document's image (path or Base64)."""
    if spec.embedding and spec.embedding.source_field:
        return spec.field(spec.embedding.source_field)
    stores = spec.object_store_fields()
    if stores:
        return spec.field(next(iter(stores)))
    raise SchemaError(f"table {spec.name!r} has no image source field (vector_source_field)")


def typed_pk(spec: TableSpec, pk: str) -> Any:
    """The primary key as the table stores it (path segments arrive as text)."""
    pk_type = spec.field(spec.primary_key).type
    if pk_type in (FieldType.STRING, FieldType.TEXT):
        return pk
    try:
        return int(pk)
    except ValueError:
        raise NotFoundError(f"no document {pk!r} in table {spec.name!r}: the primary key is a number") from None


def read_source_image(runtime: Runtime, spec: TableSpec, pk: str) -> tuple[bytes, str]:
    """(image bytes, a version tag for caching) of one document's source image."""
    field = source_field(spec)
    hits = runtime.engine.get(spec.name, [typed_pk(spec, pk)], output_fields=[field.name])
    if not hits:
        raise NotFoundError(f"no document {pk!r} in table {spec.name!r}")
    value = hits[0].fields.get(field.name)
    if not isinstance(value, str) or not value:
        # Ingest does not keep Base64 source images as attributes (HA3 does not either).
        raise NotFoundError(f"document {pk!r} keeps no image in {field.name!r} to show "
                            "(Base64 images are embedded, not stored)")
    tag = hashlib.sha256(value.encode("utf-8")).hexdigest()[:20]
    if field.object_store is not None:
        from adapter.sources.objectstore import MissingObjectError

        try:
            return store_for(runtime, spec, field).get(value), tag
        except MissingObjectError as exc:
            raise NotFoundError(str(exc)) from None
    return decode_base64(value), tag  # the alphabets ingest accepted: standard or URL-safe


def store_for(runtime: Runtime, spec: TableSpec, field: FieldSpec) -> ObjectStore:
    """The object store behind an oss field, opened server-side under the service's access
    rules (a file:// folder inside the allowed bucket folders, an allow-listed endpoint) with
    the keys stored for exactly that endpoint and bucket; they never leave this process."""
    return field_store(runtime.ingest_parts(), spec.name, field,
                       where=f"$.fields[{field.name}].user_defined_param.oss_endpoint")


def make_thumbnail(data: bytes, size: int) -> bytes:
    """A JPEG whose longest side is ``size`` pixels (never enlarged)."""
    from adapter.embed.images import decode_image

    size = max(MIN_SIZE, min(MAX_SIZE, int(size)))
    image = decode_image(data)  # RGB, EXIF-oriented, size-limited; ImageError on junk
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85, optimize=True)
    return out.getvalue()
