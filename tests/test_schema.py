"""HA3 schema → TableSpec → OpenSearch body: golden files, secrets, and every bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.errors import SchemaError
from adapter.schema import DistanceType, FieldType, VectorIndexType, load_schema_file, parse_schema, translate

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
SCHEMAS = sorted(MAPPINGS.glob("*.json"))
SEED_OSS = MAPPINGS / "image_search_oss.json"


def seed() -> dict:
    return json.loads(SEED_OSS.read_text())


@pytest.mark.parametrize("schema_path", SCHEMAS, ids=lambda p: p.stem)
def test_generated_body_matches_golden_file(schema_path):
    golden = json.loads((MAPPINGS / "opensearch" / schema_path.name).read_text())
    assert translate(load_schema_file(schema_path)).body == golden


def test_seed_schema_parses_into_table_spec():
    spec = load_schema_file(SEED_OSS)
    assert spec.primary_key == "id"
    assert spec.vector_field == "vector" and spec.dimension == 512
    assert spec.distance is DistanceType.SQUARED_EUCLIDEAN
    assert spec.vector_index.index_type is VectorIndexType.QC
    assert spec.vector_index.qc.scan_ratio == 0.01
    assert spec.vector_index.qc.train_sample_count == 3000000
    assert spec.vector_index.is_embedding_saved is False
    assert spec.embedding.model == "clip" and spec.embedding.source_field == "vector_source_image"
    assert spec.field("cate_id").type is FieldType.INT64
    store = spec.field("vector_source_image").object_store
    assert store.bucket == "The name of the OSS bucket" and store.has_credentials


def test_credentials_never_reach_body_report_or_repr():
    doc = seed()
    doc["fields"][1]["user_defined_param"].update(oss_access_key="AKID-SECRET-1", oss_secret="SK-SECRET-2")
    spec = parse_schema(doc, "t")
    translation = translate(spec)
    everything = json.dumps(translation.body) + translation.report_text() + repr(spec) + str(spec.public_dict())
    assert "AKID-SECRET-1" not in everything and "SK-SECRET-2" not in everything
    # ...while ingest can still read them.
    store = spec.field("vector_source_image").object_store
    assert store.access_key_id.get_secret_value() == "AKID-SECRET-1"
    assert store.access_key_secret.get_secret_value() == "SK-SECRET-2"


def test_seed_body_is_a_valid_knn_index():
    t = translate(load_schema_file(SEED_OSS))
    settings = t.body["settings"]["index"]
    assert settings["knn"] is True and settings["knn.advanced.approximate_threshold"] == 5000
    props = t.body["mappings"]["properties"]
    assert props["vector"] == {"type": "knn_vector", "model_id": "image_search_oss-qc-ivf"}
    assert props["id"] == {"type": "long"} and props["cate_id"] == {"type": "long"}
    assert t.body["mappings"]["_source"] == {"excludes": ["vector"]}
    method = t.training_body["method"]
    assert method["name"] == "ivf" and method["engine"] == "faiss" and method["space_type"] == "l2"
    assert method["parameters"]["encoder"] == {"name": "sq", "parameters": {"type": "fp16"}}


def test_report_accounts_for_every_seed_parameter():
    spec = load_schema_file(SEED_OSS)
    sources = " ".join(item.source for item in translate(spec).report)
    for key in spec.vector_index.raw_parameters:
        if key not in ("build_index_params", "search_index_params"):
            assert f"parameters.{key}" in sources, key
    for key in list(spec.vector_index.build_params) + list(spec.vector_index.search_params):
        assert key.split(".")[-1] in sources, key
    for field in spec.fields:
        assert f"fields.{field.name}" in sources


def test_hnsw_inner_product_mapping():
    t = translate(load_schema_file(MAPPINGS / "image_search_hnsw_ip.json"))
    method = t.body["mappings"]["properties"]["vector"]["method"]
    assert method == {"name": "hnsw", "engine": "faiss", "space_type": "innerproduct",
                      "parameters": {"m": 32, "ef_construction": 400, "ef_search": 200}}
    assert t.training_body is None


def test_linear_is_exact_search_without_graph():
    t = translate(load_schema_file(MAPPINGS / "image_search_linear.json"))
    assert t.body["settings"]["index"]["knn"] is False
    assert t.body["mappings"]["properties"]["vector"] == {"type": "knn_vector", "dimension": 512}


def test_every_field_type_is_mapped():
    t = translate(load_schema_file(MAPPINGS / "products_all_types.json"))
    props = t.body["mappings"]["properties"]
    expected = {"tiny": "byte", "small": "short", "cate_id": "integer", "big": "long", "u8": "short",
                "u16": "integer", "u32": "long", "u64": "unsigned_long", "price": "float",
                "rating": "double", "brand": "keyword", "tags": "keyword", "title": "text"}
    assert {k: props[k]["type"] for k in expected} == expected
    assert props["embedding"]["method"]["parameters"]["encoder"]["parameters"]["type"] == "fp16"


def test_table_object_wrapping_the_schema_is_accepted():
    spec = parse_schema({"name": "wrapped", "schema": seed()})
    assert spec.name == "wrapped" and spec.primary_key == "id"
    spec = parse_schema({"name": "as_string", "schema": json.dumps(seed())})
    assert spec.vector_field == "vector"


def test_two_level_centroids_and_nprobes():
    doc = seed()
    params = doc["indexs"][1]["parameters"]
    params["build_index_params"] = json.dumps({"proxima.qc.builder.centroid_count": "100*100"})
    spec = parse_schema(doc, "t")
    assert spec.vector_index.qc.centroid_count == 10000
    assert spec.vector_index.ivf_nlist(doc_count=10_000_000) == 10000
    # 1% of 10k lists = 100 lists; min_scan_doc_cnt 20000 docs / 1000 per list = 20 (lower).
    assert spec.vector_index.ivf_nprobes(10000, doc_count=10_000_000) == 100


def _mutate(fn):
    doc = copy.deepcopy(seed())
    fn(doc)
    return doc


BAD_SCHEMAS = {
    "unknown field type": (lambda d: d["fields"][2].update(field_type="INT65"), "$.fields[2].field_type"),
    "duplicate field": (lambda d: d["fields"].append({"field_name": "cate_id", "field_type": "INT32"}),
                        "$.fields[4].field_name"),
    "missing vector field": (lambda d: d["indexs"][1]["index_fields"][1].update(field_name="nope"),
                             "$.indexs[1].index_fields[1]"),
    "vector not FLOAT": (lambda d: d["fields"][3].update(field_type="INT32"), "$.indexs[1].index_fields[1]"),
    "vector not multi_value": (lambda d: d["fields"][3].update(multi_value=False), "$.indexs[1].index_fields[1]"),
    "dimension missing": (lambda d: d["indexs"][1]["parameters"].pop("dimension"),
                          "$.indexs[1].parameters.dimension"),
    "dimension not positive": (lambda d: d["indexs"][1]["parameters"].update(dimension="-3"),
                               "$.indexs[1].parameters.dimension"),
    "dimension not integer": (lambda d: d["indexs"][1]["parameters"].update(dimension="512.5"),
                              "$.indexs[1].parameters.dimension"),
    "unknown distance": (lambda d: d["indexs"][1]["parameters"].update(distance_type="Cosine"),
                         "$.indexs[1].parameters.distance_type"),
    "unknown index type": (lambda d: d["indexs"][1]["parameters"].update(vector_index_type="IVFPQ"),
                           "$.indexs[1].parameters.vector_index_type"),
    "malformed build params": (lambda d: d["indexs"][1]["parameters"].update(build_index_params="{\"a\":"),
                               "$.indexs[1].parameters.build_index_params"),
    "no primary key": (lambda d: d["indexs"].pop(0), "$.indexs"),
    "source field missing": (lambda d: d["fields"][3]["user_defined_param"].update(vector_source_field="img"),
                             "$.fields[3].user_defined_param.vector_source_field"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEMAS))
def test_bad_schema_names_its_json_path(case):
    mutate, path = BAD_SCHEMAS[case]
    with pytest.raises(SchemaError) as err:
        parse_schema(_mutate(mutate), "t")
    assert err.value.location == path, str(err.value)


def test_invalid_json_names_line_and_column():
    with pytest.raises(SchemaError) as err:
        parse_schema('{"fields": [\n  {"field_name": "id",, }]}')
    assert err.value.location == "line 2 column 23"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "adapter.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_convert_prints_body_and_report():
    result = run_cli("schema", "convert", str(SEED_OSS), "--report")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mappings"]["properties"]["vector"]["model_id"]
    assert "approximated" in result.stderr and "scan_ratio" in result.stderr


def test_cli_bad_schema_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_mutate(lambda d: d["fields"][0].update(field_type="BLOB"))))
    result = run_cli("schema", "convert", str(bad))
    assert result.returncode != 0
    assert "$.fields[0].field_type" in result.stderr and "Traceback" not in result.stderr


def test_lucene_translation_reports_what_it_approximates():
    from adapter.schema import load_schema_file, translate

    spec = load_schema_file(MAPPINGS / "image_search_oss.json")  # Qc
    t = translate(spec, knn_library="lucene")
    notes = {(r.source.rsplit(".", 1)[-1], r.status): r for r in t.report}
    qc = notes[("vector_index_type", "approximated")]
    assert "lucene" in qc.target and "IVF" in qc.why
    assert notes[("linear_build_threshold", "ignored")]
    assert t.training_body is None and t.model_id is None  # nothing to train for a Lucene graph
    assert "knn.advanced.approximate_threshold" not in t.body["settings"]["index"]
