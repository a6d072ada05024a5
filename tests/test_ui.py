"""The page's server side: static files, thumbnails, overview; and ``ha3-adapter demo``."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from _page_fixtures import PASSWORD, USER, build_runtime

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    from fastapi.testclient import TestClient

    from adapter.server.app import create_app

    runtime, photos = build_runtime(tmp_path_factory.mktemp("ui"), photos_count=6)
    with TestClient(create_app(runtime)) as client:
        yield client, photos
    runtime.close()


def test_page_and_assets_are_served(service):
    client, _ = service
    root = client.get("/", follow_redirects=False)
    assert root.status_code in (302, 307) and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and "HA3 image search" in page.text
    assert client.get("/ui/static/app.js").status_code == 200
    assert "text/css" in client.get("/ui/static/style.css").headers["content-type"]


def test_overview_needs_auth_and_lists_the_table(service):
    client, photos = service
    challenged = client.get("/ui/api/tables")
    assert challenged.status_code == 401 and challenged.headers["www-authenticate"].startswith("Basic")
    # The page's own fetches get no challenge, so its sign-in form shows instead of a browser prompt.
    quiet = client.get("/ui/api/tables", headers={"X-Requested-With": "ha3-page"})
    assert quiet.status_code == 401 and "www-authenticate" not in quiet.headers
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()}
    assert client.get("/ui/api/tables", headers=wrong).status_code == 401
    body = client.get("/ui/api/tables", headers=AUTH).json()
    assert body["user"] == USER
    [table] = body["tables"]
    assert table["name"] == "image_search" and table["doc_count"] == len(photos)
    assert table["primary_key"] == "id" and table["vector_index"] == "vector"
    assert table["distance"] and table["higher_is_better"] is False


def test_thumbnail_is_a_small_jpeg_with_private_caching(service):
    client, photos = service
    resp = client.get(f"/ui/thumbnail/image_search/{photos[0].pk}?size=64", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["cache-control"].startswith("private")
    image = Image.open(io.BytesIO(resp.content))
    assert max(image.size) == 64
    again = client.get(f"/ui/thumbnail/image_search/{photos[0].pk}?size=64",
                       headers={**AUTH, "If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304


def test_thumbnail_errors_are_clear(service):
    client, _ = service
    assert client.get("/ui/thumbnail/image_search/1").status_code == 401
    missing = client.get("/ui/thumbnail/image_search/999999", headers=AUTH)
    assert missing.status_code == 404 and "999999" in missing.text
    assert client.get("/ui/thumbnail/image_search/abc", headers=AUTH).status_code == 404
    assert client.get("/ui/thumbnail/no_such_table/1", headers=AUTH).status_code == 404


def test_the_query_the_page_builds_works(service):
    client, photos = service
    # The same string app.js builds for "a cat", cate_id 1, top 3.
    b64 = base64.b64encode("a cat".encode()).decode()
    query = (f"config=start:0,hit:3,format:json&&query=vector:'{b64}&modal=text&n=3&search_params={{}}'"
             f"&&filter=cate_id=1&&kvpairs=formula:proxima_score(vector)&&sort=+RANK&&cluster=image_search")
    body = client.get("/query", params={"query": query}, headers=AUTH).json()
    items = body["result"]["items"]
    cat1 = [p.pk for p in photos if p.cate_id == 1]
    assert 0 < len(items) <= 3
    assert all(int(item["fields"]["cate_id"]) == 1 for item in items)
    assert {int(item["fields"]["id"]) for item in items} <= set(cat1)
    scores = [float(item["sortExprValues"][0]) for item in items]
    assert scores == sorted(scores)


def test_file_bucket_outside_the_data_dir_is_refused(service, tmp_path):
    from adapter.schema.model import ObjectStoreSpec
    from adapter.server.thumbnails import store_for

    client, _ = service
    runtime = client.app.state.runtime
    spec = runtime.engine.get_spec("image_search")
    field = spec.field("vector_source_image")
    inside = field.model_copy(update={"object_store": field.object_store})
    assert store_for(runtime, spec, inside) is not None
    outside = field.model_copy(update={"object_store": ObjectStoreSpec(endpoint=tmp_path.as_uri())})
    from adapter.errors import AccessError

    with pytest.raises(AccessError, match="outside the folders this service may use"):
        store_for(runtime, spec, outside)


def test_sign_out_asks_the_browser_to_drop_its_cache_and_needs_no_login(service):
    client, _ = service
    r = client.post("/ui/api/sign-out")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["clear-site-data"] == '"cache", "storage"'

