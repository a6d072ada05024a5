"""The live OpenSearch node the suite runs against, when there is one.

`bash .ci/run` starts a node with `scripts/opensearch.sh start` and exports OPENSEARCH_URL; a
bare `pytest` without it skips every OpenSearch test with the reason below.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL", "")
SKIP_REASON = ("OPENSEARCH_URL is not set: no OpenSearch node to run against (start one with "
               "`scripts/opensearch.sh start` and export OPENSEARCH_URL=<the URL it prints>; "
               "`bash .ci/run` does both)")


def require_opensearch() -> str:
    if not OPENSEARCH_URL:
        pytest.skip(SKIP_REASON)
    return OPENSEARCH_URL


def unique(base: str) -> str:
    """The node outlives test runs: every table gets a fresh lower-case name."""
    return f"{base}_{uuid.uuid4().hex[:8]}"


def engine_config(**extra: Any) -> dict[str, Any]:
    """Service settings for the node; refresh makes each write searchable before it is acknowledged."""
    return {"kind": "opensearch", "url": require_opensearch(), "refresh": True, **extra}


def raw_client():
    """opensearch-py straight to the node, to look at what the adapter did."""
    from opensearchpy import OpenSearch

    return OpenSearch([u.strip() for u in require_opensearch().split(",")])
