"""TableSpec: the one internal model of a table, produced from an HA3 schema.

Parsers build it (``schema.parse``), engines create tables from it, ingest reads its
source fields and credentials, the query layer checks names against it. It is plain
data: no engine-specific knowledge lives here.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class FieldType(str, Enum):
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    TEXT = "TEXT"

    @property
    def is_integer(self) -> bool:
        return self.value.startswith(("INT", "UINT"))

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self in (FieldType.FLOAT, FieldType.DOUBLE)

    @property
    def int_range(self) -> tuple[int, int]:
        """(lowest, highest) value of an integer type."""
        bits = int(self.value.lstrip("UINT"))
        return (0, 2**bits - 1) if self.value.startswith("U") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


class DistanceType(str, Enum):
    SQUARED_EUCLIDEAN = "SquaredEuclidean"
    INNER_PRODUCT = "InnerProduct"

    @property
    def higher_is_better(self) -> bool:
        """proxima_score order: squared L2 ascending, inner product descending."""
        return self is DistanceType.INNER_PRODUCT


class VectorIndexType(str, Enum):
    LINEAR = "Linear"
    QC = "Qc"
    HNSW = "HNSW"
    QGRAPH = "QGraph"


class ObjectStoreSpec(BaseModel):
    """Where a STRING source field's paths point (HA3 ``content_type: oss``).

    Credentials are SecretStr so that printing, logging or dumping a spec never shows them.
    """

    model_config = ConfigDict(frozen=True)

    content_type: str = "oss"
    endpoint: str = ""
    bucket: str = ""
    access_key_id: SecretStr | None = None
    access_key_secret: SecretStr | None = None

    @property
    def has_credentials(self) -> bool:
        return bool(self.access_key_id and self.access_key_id.get_secret_value())


class FieldSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    type: FieldType
    multi_value: bool = False
    compress_type: str | None = None
    # user_defined_param with any credentials removed (they live in ``object_store``).
    params: dict[str, Any] = Field(default_factory=dict)
    object_store: ObjectStoreSpec | None = None


class EmbeddingSpec(BaseModel):
    """How the vector field is produced from a source field by a built-in model."""

    model_config = ConfigDict(frozen=True)

    model: str = "clip"  # vector_model: clip | clip_ecom (or a configured custom name)
    modal: Literal["image", "text"] = "image"
    source_field: str


class QcParams(BaseModel):
    """Qc (IVF) parameters, in HA3 terms, as the engines need them."""

    model_config = ConfigDict(frozen=True)

    centroid_count: int | None = None  # None: chosen from the document count at training
    centroid_count_raw: str | None = None  # as written: "1000", "100*100", ...
    quantizer: str | None = None  # Int8QuantizerConverter, HalfFloatConverter, ...
    train_sample_count: int | None = None
    train_sample_ratio: float | None = None
    scan_ratio: float = 0.01  # fraction of DOCUMENTS scanned per query
    brute_force_threshold: int | None = None


class HnswParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_neighbor_count: int = 100
    ef_construction: int = 500
    ef_search: int = 500
    quantizer: str | None = None  # QGraph: Int8/Int4/HalfFloat


class VectorIndexSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    pk_field: str
    vector_field: str
    dimension: int
    distance: DistanceType = DistanceType.SQUARED_EUCLIDEAN
    index_type: VectorIndexType = VectorIndexType.HNSW
    qc: QcParams | None = None
    hnsw: HnswParams | None = None
    build_params: dict[str, Any] = Field(default_factory=dict)  # decoded build_index_params
    search_params: dict[str, Any] = Field(default_factory=dict)  # decoded search_index_params
    embedding_delimiter: str = ","
    linear_build_threshold: int = 5000
    min_scan_doc_cnt: int = 20000
    is_embedding_saved: bool = True
    enable_rt_build: bool = False
    major_order: str | None = None
    # Every parameter exactly as uploaded (strings), for the translation report.
    raw_parameters: dict[str, Any] = Field(default_factory=dict)

    # -- derived index geometry, shared by both engines so they build the same thing --

    def trains_ivf(self, doc_count: int) -> bool:
        """Whether a Qc table of ``doc_count`` documents gets a trained IVF index. HA3 searches
        a table below ``linear_build_threshold`` by brute force, and so do we: an IVF trained
        on a handful of vectors (nlist 1, an int8 range from a tiny sample) would only make
        results worse."""
        return self.index_type is VectorIndexType.QC and doc_count >= self.linear_build_threshold

    def ivf_nlist(self, doc_count: int | None = None) -> int:
        """Qc centroid_count, or automatic: ~4*sqrt(N) lists, each with >= 39 training points."""
        if self.qc and self.qc.centroid_count:
            nlist = self.qc.centroid_count
        elif doc_count:
            nlist = int(round(4 * math.sqrt(doc_count)))
        else:
            nlist = 1024
        if doc_count:
            nlist = min(nlist, max(1, doc_count // 39))
        return max(1, nlist)

    def ivf_nprobes(self, nlist: int, doc_count: int | None = None, scan_ratio: float | None = None) -> int:
        """HA3 scans a fraction of DOCUMENTS; IVF probes lists of ~N/nlist documents each.

        ceil(scan_ratio * nlist) lists scan scan_ratio of the documents; min_scan_doc_cnt
        raises that floor when the document count is known.
        """
        ratio = scan_ratio if scan_ratio is not None else (self.qc.scan_ratio if self.qc else 0.01)
        nprobes = math.ceil(ratio * nlist)
        if doc_count:
            per_list = max(1.0, doc_count / nlist)
            nprobes = max(nprobes, math.ceil(min(self.min_scan_doc_cnt, doc_count) / per_list))
        return max(1, min(nlist, nprobes))

    def hnsw_m(self) -> int:
        """proxima's max_neighbor_count bounds layer-0 links; faiss keeps 2*M there."""
        neighbors = self.hnsw.max_neighbor_count if self.hnsw else 100
        return max(2, neighbors // 2)


class TableSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    fields: list[FieldSpec]
    primary_key: str
    vector_index: VectorIndexSpec
    embedding: EmbeddingSpec | None = None
    # Other HA3 indexes (inverted indexes on attributes), kept for the report.
    other_indexes: list[dict[str, Any]] = Field(default_factory=list)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def vector_field(self) -> str:
        return self.vector_index.vector_field

    @property
    def dimension(self) -> int:
        return self.vector_index.dimension

    @property
    def distance(self) -> DistanceType:
        return self.vector_index.distance

    @property
    def attribute_fields(self) -> list[FieldSpec]:
        """Every field but the vector: what filters, sorts and outputs may name."""
        return [f for f in self.fields if f.name != self.vector_field]

    @property
    def source_field(self) -> FieldSpec | None:
        return self.field(self.embedding.source_field) if self.embedding else None

    def public_dict(self) -> dict[str, Any]:
        """JSON-safe dump WITHOUT credentials: what engines persist (index ``_meta``, SQLite).

        ``TableSpec.model_validate(spec.public_dict())`` round-trips everything but the
        object-store keys, which the service keeps in its own secrets store.
        """
        data = self.model_dump(mode="json")
        for field in data["fields"]:
            if field.get("object_store"):
                field["object_store"]["access_key_id"] = None
                field["object_store"]["access_key_secret"] = None
        return data

    def object_store_fields(self) -> dict[str, ObjectStoreSpec]:
        return {f.name: f.object_store for f in self.fields if f.object_store is not None}
