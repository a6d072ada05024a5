"""Where the shared real-image datasets live (tests, evaluations and benchmarks use them).

Order: ``HA3_ADAPTER_DATASETS``; ``../shared/datasets`` next to the project root; then
``/work/shared/datasets``. ``None`` when absent (a user's machine): callers skip with a reason.
"""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def datasets_dir() -> Path | None:
    candidates = []
    if os.environ.get("HA3_ADAPTER_DATASETS"):
        candidates.append(Path(os.environ["HA3_ADAPTER_DATASETS"]))
    candidates += [_ROOT.parent / "shared" / "datasets", Path("/work/shared/datasets")]
    for c in candidates:
        if (c / "README.md").exists() or any(c.glob("*/images")):
            return c
    return None


def dataset_images(name: str, limit: int | None = None) -> list[Path]:
    """Sorted JPEG paths of one set (``flickr8k-1k``, ``fashion-10k``, ``imagenet-sample``); [] if absent."""
    root = datasets_dir()
    if root is None:
        return []
    files = sorted((root / name / "images").glob("*.jpg"))
    return files[:limit] if limit else files
