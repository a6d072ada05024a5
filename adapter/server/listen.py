"""The service's listening socket, bound before any slow start-up work.

Binding first means a busy port is reported at once, in one line naming ``--port``, before
the data directory is touched, models load or the demo prints its login banner; uvicorn then
serves on this very socket (``serve_on``), so nothing can take the port in between.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

import uvicorn

from adapter.errors import ConfigError


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening: connections are refused until
    the server starts). ConfigError naming ``--port`` when the port is taken or not allowed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart may reuse the port while old connections sit in TIME_WAIT
    # (a port another process listens on still fails with EADDRINUSE).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another ha3-adapter, or another "
                              f"service?): stop it, or choose another port with --port", "--port") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"not allowed to listen on port {port}: ports below 1024 need privileges; "
                              "choose another port with --port", "--port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host, or choose "
                          "another port with --port", "--port") from None
    return sock


def serve_on(config: Any, listener: socket.socket) -> None:
    """Run uvicorn with ``config`` on the bound ``listener`` until interrupted."""
    _BoundServer(config).run(sockets=[listener])


class _BoundServer(uvicorn.Server):
    """uvicorn says where it listens only on sockets it binds itself; this says it too, once
    it accepts connections (after the lifespan's warm-up)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets and not self.should_exit:
            host, port = sockets[0].getsockname()[:2]
            where = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", where, port)
