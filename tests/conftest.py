"""Suite-wide settings.

The starter models export their ONNX graphs on first use (about 20 s on two cores). Every
service a test starts has a data dir of its own, where the graphs would otherwise go, so
the whole suite (subprocesses included) shares one cache outside the repository; the graphs
are keyed by everything they depend on, so a shared cache never serves a stale one.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HA3_ADAPTER_CACHE_DIR", str(Path(tempfile.gettempdir()) / "ha3-adapter-test-cache"))
