"""HA3 schema JSON → TableSpec → OpenSearch index body."""

from adapter.schema.model import (
    DistanceType,
    EmbeddingSpec,
    FieldSpec,
    FieldType,
    ObjectStoreSpec,
    TableSpec,
    VectorIndexSpec,
    VectorIndexType,
)
from adapter.schema.opensearch import Translation, translate
from adapter.schema.parse import load_schema_file, parse_schema

__all__ = [
    "DistanceType", "EmbeddingSpec", "FieldSpec", "FieldType", "ObjectStoreSpec", "TableSpec",
    "VectorIndexSpec", "VectorIndexType", "Translation", "translate", "load_schema_file", "parse_schema",
]
