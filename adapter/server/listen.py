"""The service's listening socket, bound before any slow start-up work.

Binding first means a busy port is reported at once, in one line naming ``--port``, before
the data directory is touched, models load or the demo prints its login banner; uvicorn then
serves on this very socket (``Server.run(sockets=[...])``), so nothing can take the port in
between.
"""

from __future__ import annotations

import errno
import socket

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
