"""Document validation shared by both engines: one bad document fails alone, with a reason."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np

from adapter.plan.records import Document, WriteFailure
from adapter.schema.model import TableSpec
from adapter.values import stored_scalar, stored_value
from adapter.vectors import to_vector




def vector_value(spec: TableSpec, vector: Any) -> np.ndarray:
    if vector is None:
        raise ValueError(f"vector field '{spec.vector_field}' is missing")
    if isinstance(vector, str):
        try:
            vector = [float(x) for x in vector.split(spec.vector_index.embedding_delimiter) if x.strip()]
        except ValueError:
            raise ValueError(f"vector field '{spec.vector_field}' is not delimited numbers") from None
    arr = to_vector(vector)
    if arr.shape[0] != spec.dimension:
        raise ValueError(f"vector has {arr.shape[0]} values, table '{spec.name}' needs {spec.dimension}")
    return arr


def normalize_document(spec: TableSpec, doc: Document) -> tuple[Any, dict[str, Any], np.ndarray]:
    """(pk, {attribute: value} for every attribute field, vector). ValueError on bad input."""
    pk_field = spec.field(spec.primary_key)
    raw_pk = doc.pk if doc.pk is not None else doc.fields.get(spec.primary_key)
    if raw_pk is None:
        raise ValueError(f"primary key '{spec.primary_key}' is missing")
    pk = stored_scalar(pk_field, raw_pk)
    unknown = [k for k in doc.fields if spec.field(k) is None]
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")
    values = {f.name: (pk if f.name == spec.primary_key else stored_value(f, doc.fields.get(f.name)))
              for f in spec.attribute_fields}
    return pk, values, vector_value(spec, doc.vector)


def valid_documents(spec: TableSpec, docs: Iterable[Document],
                    failures: list[WriteFailure]) -> Iterator[tuple[Any, dict[str, Any], np.ndarray]]:
    """normalize_document over a batch: each bad document becomes a WriteFailure naming it, and
    the batch goes on (both engines report per document, as OpenSearch's bulk API does)."""
    for doc in docs:
        try:
            yield normalize_document(spec, doc)
        except (ValueError, TypeError) as exc:
            failures.append(WriteFailure(doc.pk, str(exc)))
