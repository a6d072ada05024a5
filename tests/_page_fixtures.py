"""A real service for the page's tests: tiny CLIP, embedded engine, demo photos, uvicorn.

Used by tests/test_ui.py (TestClient) and tests/test_browser.py (a live port, _server_support.live_server).
"""

from __future__ import annotations

from pathlib import Path

import yaml

USER, PASSWORD = "alice", "correct horse"
PHOTO_COUNT = 10  # enough for filters and ranking, small enough for a 2-core test run


def build_runtime(tmp: Path, photos_count: int = PHOTO_COUNT):
    """Runtime over ``tmp`` with the demo table holding the first shipped photos."""
    from adapter.demo import bucket_dir, demo_settings, ensure_table, ingest_photos, shipped_photos, write_source
    from adapter.embed.testing import make_tiny_clip, tiny_clip_registry_config
    from adapter.runtime import Runtime

    clip = make_tiny_clip(tmp / "tiny-clip")
    models = tmp / "models.yaml"
    models.write_text(yaml.safe_dump(tiny_clip_registry_config(clip)))
    settings = demo_settings(tmp / "data", opensearch=None, port=0, models=models, user=USER, password=PASSWORD)
    runtime = Runtime.from_settings(settings)
    photos = shipped_photos()[:photos_count]
    bucket = bucket_dir(tmp / "data")
    ensure_table(runtime, bucket)
    written, failures = ingest_photos(runtime, photos, bucket)
    assert not failures and written == len(photos), failures
    write_source(tmp / "data", photos, bucket)  # what the admin view's Rebuild button uses
    return runtime, photos
