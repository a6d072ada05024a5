"""Bad input is a fast, clear 4xx in the client's own format (issue 25, findings 6, 8, 11):
extreme images, deep JSON, deep filters and searchParams, huge offsets and keys, too much
work in one request."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _server_support import ADMIN, basic, make_settings, png_b64, push_body, seed_schema

TABLES = "/openapi/ha3/instances/ha3-adapter/tables"


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, format="PNG", optimize=True)
    return out.getvalue()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from adapter.embed.testing import make_tiny_clip
    from adapter.runtime import Runtime
    from adapter.server.app import create_app

    tmp = tmp_path_factory.mktemp("inputs")
    runtime = Runtime.from_settings(make_settings(tmp, make_tiny_clip(tmp / "clip", dim=512)))
    with TestClient(create_app(runtime), raise_server_exceptions=False) as c:
        assert c.post(TABLES, headers=basic(ADMIN), json={"name": "images", "schema": seed_schema()}).status_code == 200
        assert c.post("/update/images/actions/bulk", headers=basic(ADMIN), json=push_body(4)).status_code == 200
        yield c
    runtime.close()


def test_a_tiny_image_with_an_extreme_aspect_ratio_is_refused_before_decoding(client):
    """Finding 6: a 99-byte 20000x1 PNG took 20 s and 6 GB to embed."""
    from adapter.embed.images import decode_image
    from adapter.errors import ImageError

    data = _png(20000, 1)
    assert len(data) < 200
    with pytest.raises(ImageError, match="aspect ratio"):
        decode_image(data)
    decode_image(_png(640, 32))  # 20:1 banners still decode
    r = client.post("/update/images/actions/bulk", headers=basic(ADMIN), json=[
        {"cmd": "add", "fields": {"id": 90, "cate_id": 1, "vector_source_image": base64.b64encode(data).decode()}},
        {"cmd": "add", "fields": {"id": 91, "cate_id": 1, "vector_source_image": png_b64((9, 9, 9))}}])
    assert r.status_code == 400, r.text
    assert [(e["pk"], e["reason"]) for e in r.json()["errors"]] == [(90, "undecodable_image")]
    assert "aspect ratio" in r.json()["errors"][0]["message"]
    r = client.post("/vector-service/inference-query", headers=basic(ADMIN), json={
        "tableName": "images", "content": base64.b64encode(data).decode(), "modal": "image"})
    assert r.status_code == 400 and "aspect ratio" in r.json()["errorMsg"]
