"""Object stores (moto S3 on loopback, local dirs) and table sources (files, SQLite)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adapter.errors import ConfigError, SourceError
from adapter.schema import load_schema_file
from adapter.sources.objectstore import (AccessDeniedError, LocalDirStore, MissingObjectError, ObjectStoreConfig,
                                         ObjectStoreError, StoreTimeoutError, candidate_keys, open_store)
from adapter.sources.tables import (PartitionSpec, RecordError, SqlSource, TableSourceConfig, coerce_record,
                                    count_rows, read_table)
from ingest_fixtures import S3_KEY, S3_SECRET, fault_hook, no_retry_sleep, png_bytes, s3_bucket, s3_server  # noqa: F401

from pathlib import Path

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"


# --------------------------------------------------------------------------- keys


def test_leading_slash_tries_bucket_root_first_then_literal():
    assert candidate_keys("/Test image/image/10031.png") == ["Test image/image/10031.png", "/Test image/image/10031.png"]
    assert candidate_keys("image/1.jpg") == ["image/1.jpg"]


def test_local_dir_store_reads_seed_style_keys(tmp_path):
    (tmp_path / "Test image" / "image").mkdir(parents=True)
    (tmp_path / "Test image" / "image" / "10031.png").write_bytes(b"png!")
    store = open_store(f"file://{tmp_path}")
    assert isinstance(store, LocalDirStore)
    assert store.get("/Test image/image/10031.png") == b"png!"
    assert store.get("Test image/image/10031.png") == b"png!"
    with pytest.raises(MissingObjectError, match="10032.png"):
        store.get("/Test image/image/10032.png")
    with pytest.raises(AccessDeniedError):
        store.get("../outside.png")


# --------------------------------------------------------------------------- S3 (moto)


def _store(endpoint, bucket, **extra):
    return open_store(ObjectStoreConfig(endpoint=endpoint, bucket=bucket, addressing_style="path",
                                        access_key_id=S3_KEY, access_key_secret=S3_SECRET, **extra))


def test_s3_keys_with_spaces_and_leading_slash(s3_bucket):
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="Test image/image/10031.png", Body=b"root-relative")
    client.put_object(Bucket=bucket, Key="/literal/lead slash.png", Body=b"literal")
    store = _store(endpoint, bucket)
    assert store.get("/Test image/image/10031.png") == b"root-relative"  # the seed's own form
    assert store.get("Test image/image/10031.png") == b"root-relative"
    assert store.get("/literal/lead slash.png") == b"literal"  # a key that really starts with "/"


def test_s3_missing_object_names_key_not_credentials(s3_bucket):
    endpoint, bucket, _ = s3_bucket
    store = _store(endpoint, bucket)
    with pytest.raises(MissingObjectError) as info:
        store.get("/Test image/image/missing.png")
    text = str(info.value)
    assert "missing.png" in text and S3_SECRET not in text and S3_KEY not in text
    assert info.value.reason == "missing_object"


def test_s3_credentials_from_schema_spec_and_env(s3_bucket, monkeypatch):
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="a.png", Body=b"x")
    spec = load_schema_file(MAPPINGS / "image_search_oss.json").field("vector_source_image").object_store
    # Schema placeholders for endpoint/bucket are overridden by the pipeline's values;
    # credentials come from the standard AWS variables when the pipeline has none.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    store = open_store(spec, overrides={"endpoint": endpoint, "bucket": bucket, "addressing_style": "path"})
    assert store.get("/a.png") == b"x"
    assert store.bucket == bucket


def test_s3_retries_500s_then_succeeds(s3_bucket, no_retry_sleep):
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="flaky.png", Body=b"ok")
    store = _store(endpoint, bucket, max_attempts=4)
    seen = fault_hook(store.client, key_part="flaky.png", status=500, times=2)
    assert store.get("/flaky.png") == b"ok"
    assert seen["attempts"] == 3  # two 500s retried, third attempt served


def test_s3_persistent_500_and_timeout_and_403_are_typed(s3_bucket, no_retry_sleep):
    endpoint, bucket, client = s3_bucket
    client.put_object(Bucket=bucket, Key="down.png", Body=b"x")
    client.put_object(Bucket=bucket, Key="slow.png", Body=b"x")
    client.put_object(Bucket=bucket, Key="secret.png", Body=b"x")
    store = _store(endpoint, bucket, max_attempts=3)
    down = fault_hook(store.client, key_part="down.png", status=503)
    slow = fault_hook(store.client, key_part="slow.png", timeout=True)
    fault_hook(store.client, key_part="secret.png", status=403)
    with pytest.raises(ObjectStoreError) as info:
        store.get("down.png")
    assert info.value.reason == "store_error" and "after 3 attempts" in str(info.value)
    assert down["attempts"] == 3
    with pytest.raises(StoreTimeoutError, match="slow.png"):
        store.get("slow.png")
    assert slow["attempts"] == 3
    with pytest.raises(AccessDeniedError, match="secret.png"):
        store.get("secret.png")


def test_bad_store_urls_are_clear():
    with pytest.raises(SourceError, match="scheme"):
        open_store("ftp://x")
    with pytest.raises(SourceError, match="bucket"):
        open_store({"endpoint": "http://127.0.0.1:1"})


# --------------------------------------------------------------------------- tables

ROWS = [
    {"id": 1, "cate_id": 10, "vector_source_image": "/Test image/image/1.png", "ds": "20250331"},
    {"id": 2, "cate_id": 20, "vector_source_image": "/Test image/image/2.png", "ds": "20250331"},
    {"id": 3, "cate_id": 10, "vector_source_image": "/Test image/image/3.png", "ds": "20250401"},
]


def _write_all_formats(tmp_path):
    csv_path = tmp_path / "items.csv"
    csv_path.write_text("id,cate_id,vector_source_image,ds\n" + "".join(
        f"{r['id']},{r['cate_id']},{r['vector_source_image']},{r['ds']}\n" for r in ROWS))
    tsv_path = tmp_path / "items.tsv"
    tsv_path.write_text("id\tcate_id\tvector_source_image\tds\n" + "".join(
        f"{r['id']}\t{r['cate_id']}\t{r['vector_source_image']}\t{r['ds']}\n" for r in ROWS))
    jsonl_path = tmp_path / "items.jsonl"
    jsonl_path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    parquet_path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet_path)
    return [csv_path, tsv_path, jsonl_path, parquet_path]


def test_every_file_format_gives_the_same_records(tmp_path):
    spec = load_schema_file(MAPPINGS / "image_search_oss.json")
    for path in _write_all_formats(tmp_path):
        rows = list(read_table(TableSourceConfig(path=str(path))))
        assert [r.offset for r in rows] == [0, 1, 2], path
        records = [coerce_record(r.data, spec) for r in rows]
        assert records == [{k: v for k, v in r.items() if k != "ds"} for r in ROWS], path


def test_partition_column_and_glob(tmp_path):
    _write_all_formats(tmp_path)
    config = TableSourceConfig(path=str(tmp_path / "items.parquet"), partition=PartitionSpec(column="ds", value="20250331"))
    assert [r.data["id"] for r in read_table(config)] == [1, 2]
    assert count_rows(config) == 2
    for ds in ("20250331", "20250401"):
        part = tmp_path / f"ds={ds}"
        part.mkdir()
        pq.write_table(pa.Table.from_pylist([r for r in ROWS if r["ds"] == ds]), part / "items.parquet")
    globbed = TableSourceConfig(path="ds=*/items.parquet", base_dir=tmp_path)
    assert [r.data["id"] for r in read_table(globbed)] == [1, 2, 3]
    assert [r.data["id"] for r in read_table(globbed, start=2)] == [3]
    with pytest.raises(SourceError, match="no table files"):
        list(read_table(TableSourceConfig(path="nothing-*.csv", base_dir=tmp_path)))


def test_sqlite_through_sqlalchemy_with_partition(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'items.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE items (item_id INTEGER, cate INTEGER, path TEXT, ds TEXT)"))
        for r in ROWS:
            conn.execute(sa.text("INSERT INTO items VALUES (:i, :c, :p, :d)"),
                         {"i": r["id"], "c": r["cate_id"], "p": r["vector_source_image"], "d": r["ds"]})
    engine.dispose()
    spec = load_schema_file(MAPPINGS / "image_search_oss.json")
    columns = {"id": "item_id", "cate_id": "cate", "vector_source_image": "path"}
    config = TableSourceConfig(sql=SqlSource(url=url, query="SELECT * FROM items ORDER BY item_id"),
                               partition=PartitionSpec(column="ds", values=["20250401"]), columns=columns)
    rows = list(read_table(config))
    assert [coerce_record(r.data, spec, columns) for r in rows] == [
        {"id": 3, "cate_id": 10, "vector_source_image": "/Test image/image/3.png"}]
    whole = TableSourceConfig(sql=SqlSource(url=url, query="SELECT * FROM items"))
    assert count_rows(whole) == 3
    with pytest.raises(SourceError, match="SQL source failed"):
        list(read_table(TableSourceConfig(sql=SqlSource(url=url, query="SELECT * FROM nope"))))


def test_coercion_errors_are_per_record():
    spec = load_schema_file(MAPPINGS / "products_all_types.json")
    good = coerce_record({"id": "7", "tiny": "-5", "u8": 255, "price": "9.5", "big": "1,2,3",
                          "tags": "red\x1dblue", "brand": 42}, spec)
    assert good == {"id": 7, "tiny": -5, "u8": 255, "price": 9.5, "big": [1, 2, 3], "tags": ["red", "blue"],
                    "brand": "42"}
    for bad, field in (({"id": 1, "tiny": 300}, "tiny"), ({"id": 1, "u8": -1}, "u8"),
                       ({"id": 1, "price": "cheap"}, "price"), ({"id": "x"}, "id"), ({"cate_id": 1}, "id")):
        with pytest.raises(RecordError) as info:
            coerce_record(bad, spec)
        assert info.value.field == field and field in str(info.value)


def test_table_config_needs_one_source():
    with pytest.raises(ConfigError):
        TableSourceConfig()


def test_invalid_bucket_name_and_schemeless_endpoint_are_typed(s3_server):
    store = open_store({"endpoint": s3_server.replace("http://", ""), "bucket": "The name of the OSS bucket",
                        "access_key_id": S3_KEY, "access_key_secret": S3_SECRET, "max_attempts": 1})
    assert store.client.meta.endpoint_url.startswith("https://")
    with pytest.raises(ObjectStoreError) as info:
        store.get("/a.png")
    assert "a.png" in str(info.value) and S3_SECRET not in str(info.value)
