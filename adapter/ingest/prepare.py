"""One record → a document, shared by rebuilds and pushes.

Stage 1 (thread pool, I/O bound): ``RecordPreparer.prepare`` coerces the record's fields
and fetches its image bytes (object store or Base64) or parses a ready vector.
Stage 2 (batched, CPU bound): ``embed_prepared`` embeds every image of a batch in one call
to the EmbeddingService and checks each vector.
Every way a record can fail ends as a ``Failure(pk, reason, message)``; nothing is dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from adapter.embed.base import Embedder
from adapter.base64text import is_data_url
from adapter.embed.images import decode_base64
from adapter.plan.records import Document
from adapter.errors import AdapterError, ImageError
from adapter.schema.model import TableSpec
from adapter.sources.objectstore import ObjectStore, ObjectStoreError
from adapter.sources.tables import RecordError, coerce_record, raw_value
from adapter.vectors import to_vector, vectors_problem

# The reasons a record can fail, as they appear in report files and task status.
REASONS = (
    "missing_object", "access_denied", "timeout", "store_error",  # object store
    "undecodable_image", "missing_image", "bad_vector", "bad_record",  # the record itself
    "embed_error", "engine_rejection",  # downstream
)

ImageKind = Literal["auto", "object_store", "base64", "vector"]


@dataclass
class Failure:
    pk: Any
    reason: str
    message: str
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # The key as the client sent it; a non-finite number (1e999) as text: JSON has no such number.
        pk = str(self.pk) if isinstance(self.pk, float) and not math.isfinite(self.pk) else self.pk
        data = {"pk": pk, "reason": self.reason, "message": self.message}
        if self.offset is not None:
            data["offset"] = self.offset
        return data


@dataclass
class Prepared:
    offset: int | None
    pk: Any = None
    fields: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None
    picture: Any = None  # decoded PIL image, when decoding happens in the fetch pool
    vector: np.ndarray | None = None
    failure: Failure | None = None

    def fail(self, reason: str, message: str) -> "Prepared":
        self.failure = Failure(self.pk, reason, message, self.offset)
        self.image = None
        self.picture = None
        self.vector = None
        return self


def parse_vector(value: Any, dimension: int, delimiter: str = ",") -> np.ndarray:
    """A ready vector: list of numbers or a delimited string ('0.1,0.2,...'). ValueError if bad."""
    if isinstance(value, str):
        parts = [p for p in value.strip().strip("[]").split(delimiter) if p.strip()]
        try:
            items = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"vector is not {delimiter!r}-delimited numbers") from None
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = value
    else:
        raise ValueError(f"vector must be a list or a delimited string, not {type(value).__name__}")
    return to_vector(items, dimension)


class RecordPreparer:
    """Turns raw records into Prepared items for one table. Thread-safe (no mutable state)."""

    def __init__(self, spec: TableSpec, *, store: ObjectStore | None = None, image_kind: ImageKind = "auto",
                 columns: dict[str, str] | None = None, decode: bool = False):
        self.spec = spec
        self.decode = decode  # decode here (fetch threads) when the embedder takes decoded images
        self.store = store
        self.columns = columns or {}
        self.image_kind = image_kind
        self.source_field = spec.embedding.source_field if spec.embedding else None
        source = spec.source_field
        self.source_is_path = bool(source is not None and source.object_store is not None and store is not None)

    def prepare(self, raw: dict[str, Any], offset: int | None = None) -> Prepared:
        item = Prepared(offset)
        item.pk = raw_value(raw, self.spec.primary_key, self.columns)
        try:
            item.fields = coerce_record(raw, self.spec, self.columns)
        except RecordError as exc:
            return item.fail("bad_record", str(exc))
        item.pk = item.fields[self.spec.primary_key]

        ready = raw_value(raw, self.spec.vector_field, self.columns)
        if self.image_kind == "vector" or _present(ready):
            if not _present(ready):
                return item.fail("bad_vector", f"vector field '{self.spec.vector_field}' is empty")
            try:
                item.vector = parse_vector(ready, self.spec.dimension, self.spec.vector_index.embedding_delimiter)
            except ValueError as exc:
                return item.fail("bad_vector", str(exc))
            return item

        if self.source_field is None:
            return item.fail("bad_vector", f"no vector in '{self.spec.vector_field}' and the schema names no "
                                           "vector_source_field to embed")
        value = item.fields.get(self.source_field)
        if not isinstance(value, str) or not value.strip():
            return item.fail("missing_image", f"source field '{self.source_field}' is empty")
        use_store = self.image_kind == "object_store" or (self.image_kind == "auto" and self.source_is_path
                                                          and not is_data_url(value))
        try:
            if use_store:
                if self.store is None:
                    return item.fail("store_error", "no object store configured for an object path")
                item.image = self.store.get(value)
            else:
                item.image = decode_base64(value)
                # A Base64 image is not an attribute worth storing twice (HA3 drops it too).
                item.fields.pop(self.source_field, None)
        except ObjectStoreError as exc:
            return item.fail(exc.reason, str(exc))
        except ImageError as exc:
            return item.fail("undecodable_image", str(exc))
        except AdapterError as exc:
            return item.fail("store_error", str(exc))
        except Exception as exc:  # noqa: BLE001 - one record's surprise must not stop a 1M-row rebuild
            return item.fail("store_error", f"{type(exc).__name__}: {exc}")
        if not item.image:
            return item.fail("undecodable_image", "image is empty (0 bytes)")
        if self.decode:
            from adapter.embed.images import decode_image

            try:
                item.picture = decode_image(item.image)
            except ImageError as exc:
                return item.fail("undecodable_image", str(exc))
            item.image = None
        return item


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) > 0
    return True


def takes_decoded(embedder: Embedder | None) -> bool:
    """Should decoding run in our fetch pool? Only for embedders taking decoded images; the
    EmbeddingService decodes bytes in its own pool, overlapped with the model (and with its
    JPEG draft-decoding fast path), so it gets bytes."""
    return callable(getattr(embedder, "embed_pil_images", None))


def _encode(embedder: Embedder | None, model: str, batch: Sequence[Prepared]) -> list[Any]:
    if batch[0].picture is None:
        return list(embedder.embed_images(model, [it.image for it in batch]))
    return list(embedder.embed_pil_images(model, [it.picture for it in batch]))


def embed_prepared(items: Sequence[Prepared], embedder: Embedder | None, model: str, dimension: int,
                   batch_size: int = 32) -> None:
    """Fill ``vector`` for every item that has an image, in batches; failures in place."""
    pending = [it for it in items if it.failure is None and it.vector is None
               and (it.image is not None or it.picture is not None)]
    # Keep decoded and raw items apart: one call per kind.
    groups = [[it for it in pending if it.picture is not None], [it for it in pending if it.picture is None]]
    for group in groups:
        for start in range(0, len(group), batch_size):
            batch = group[start:start + batch_size]
            try:
                results = _encode(embedder, model, batch)
            except AdapterError as exc:
                for it in batch:
                    it.fail("embed_error", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a model crash fails the batch, reported per record
                for it in batch:
                    it.fail("embed_error", f"{type(exc).__name__}: {exc}")
                continue
            for it, result in zip(batch, results):
                it.image = None  # free the bytes/pixels as soon as they are embedded
                it.picture = None
                if isinstance(result, ImageError):
                    it.fail("undecodable_image", str(result))
                elif isinstance(result, BaseException):
                    it.fail("embed_error", str(result))
                else:
                    vector = np.asarray(result, dtype=np.float32).reshape(-1)
                    problem = (f"of shape {vector.shape}, the table's dimension is {dimension}"
                               if vector.shape != (dimension,) else vectors_problem(vector))
                    if problem:
                        it.fail("bad_vector", f"model '{model}' returned a vector {problem}")
                    else:
                        it.vector = vector


def to_document(item: Prepared) -> Document:
    assert item.vector is not None
    return Document(pk=item.pk, fields=item.fields, vector=item.vector)


def model_name(spec: TableSpec, overrides: dict[str, str] | None = None, model: str | None = None) -> str:
    """The registry name to embed with: pipeline ``model`` > ``models`` map > schema's vector_model."""
    if model:
        return model
    base = spec.embedding.model if spec.embedding else "clip"
    return (overrides or {}).get(base, base)
