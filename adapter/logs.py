"""Log set-up for the command line: our lines at the chosen level, libraries' chatter only when debugging."""

from __future__ import annotations

import logging

from adapter.errors import ConfigError

# Loggers that report start-up details nobody acts on: faiss says which CPU build it loads
# ("Loading faiss with AVX2 support.", and a failed attempt per missing build) on every start.
QUIET_UNLESS_DEBUG = ("faiss.loader",)


def configure_logging(level: str, fmt: str) -> None:
    """Root logging at ``level`` (a name: info, debug, ...); the QUIET_UNLESS_DEBUG loggers
    show only warnings unless ``level`` is debug."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError(f"unknown log level {level!r} (debug, info, warning, error)", "--log-level")
    logging.basicConfig(level=numeric, format=fmt)
    for name in QUIET_UNLESS_DEBUG:
        logging.getLogger(name).setLevel(logging.NOTSET if numeric <= logging.DEBUG else logging.WARNING)
