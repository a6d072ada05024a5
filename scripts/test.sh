#!/usr/bin/env bash
# Install with test extras (and headless Chromium for the browser tests), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -c constraints.txt -e '.[test,onnx]'
bash scripts/install_browser.sh  # Debian's chromium for tests/test_browser.py
python3 -m pytest -q
