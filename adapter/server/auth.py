"""HTTP Basic authentication against the configured users (scrypt hashes at rest).

The official SDKs send ``authorization: Basic base64(user:password)`` on every request.
scrypt is deliberately slow, so a verified header is remembered as an HMAC under a
per-process random key (never the header itself); a wrong password is never cached and is
always checked in full with ``hmac.compare_digest``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from fastapi import Request

from adapter.config import UserConfig, verify_password
from adapter.errors import AuthError, ForbiddenError

_DUMMY_HASH_CACHE: dict[str, str] = {}


@dataclass(frozen=True)
class Principal:
    username: str
    read_only: bool


class Authenticator:
    def __init__(self, users: list[UserConfig], *, required: bool = True, cache_size: int = 1024):
        self._users = {u.username: u for u in users}
        self.required = required and bool(users)
        self._key = secrets.token_bytes(32)
        self._cache: dict[bytes, Principal] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def authenticate(self, header: str | None) -> Principal:
        if not self.required:
            return Principal("anonymous", read_only=False)
        if not header:
            raise AuthError("authentication required: send HTTP Basic credentials "
                            "(the instance username and password)", "header authorization")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            raise AuthError("unsupported authorization scheme: use HTTP Basic", "header authorization")
        tag = hmac.new(self._key, token.strip().encode("utf-8", "replace"), hashlib.sha256).digest()
        cached = self._cache.get(tag)
        if cached is not None:
            return cached
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("malformed Basic credentials", "header authorization") from None
        username, sep, password = decoded.partition(":")
        user = self._users.get(username)
        # Verify even for unknown users so timing does not reveal which usernames exist.
        ok = verify_password(password, user.password_hash if user else _dummy_hash()) and sep == ":"
        if not ok or user is None:
            raise AuthError("wrong username or password", "header authorization")
        principal = Principal(user.username, user.read_only)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[tag] = principal
        return principal


def _dummy_hash() -> str:
    if "h" not in _DUMMY_HASH_CACHE:
        from adapter.config import hash_password
        _DUMMY_HASH_CACHE["h"] = hash_password(secrets.token_hex(8))
    return _DUMMY_HASH_CACHE["h"]


def reader(request: Request) -> Principal:
    """FastAPI dependency: any authenticated user."""
    principal = request.app.state.auth.authenticate(request.headers.get("authorization"))
    request.state.user = principal.username
    return principal


def writer(request: Request) -> Principal:
    """FastAPI dependency: an authenticated user that may write."""
    principal = reader(request)
    if principal.read_only:
        raise ForbiddenError(f"user '{principal.username}' is read-only", f"{request.method} {request.url.path}")
    return principal
