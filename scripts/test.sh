#!/usr/bin/env bash
# README's test command: install with the test extras at the versions CI last passed with
# (constraints.txt), Debian's Chromium for the browser tests, a real OpenSearch node for the
# OpenSearch suite (scripts/opensearch.sh; unless OPENSEARCH_URL already names one), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -c constraints.txt -e '.[test,onnx]'
bash scripts/install_browser.sh  # Debian's chromium for tests/test_browser.py

started_node=""
if [ -z "${OPENSEARCH_URL:-}" ]; then
  if command -v java >/dev/null && command -v mvn >/dev/null; then
    scripts/opensearch.sh status 2>/dev/null | grep -q ' up ' || started_node=1
    OPENSEARCH_URL="$(scripts/opensearch.sh start --port "${OPENSEARCH_PORT:-9200}" | tail -n 1)"
    export OPENSEARCH_URL
    echo "OpenSearch node: $OPENSEARCH_URL"
  else
    echo "no java/mvn here: the OpenSearch tests will skip (they need scripts/opensearch.sh)" >&2
  fi
fi
# A node this script started is stopped again, whatever pytest's outcome.
[ -n "$started_node" ] && trap 'scripts/opensearch.sh stop' EXIT
python3 -m pytest -q "$@"
