"""HTTP Basic authentication against the configured users (scrypt hashes at rest).

The official SDKs send ``authorization: Basic base64(user:password)`` on every request.
scrypt is deliberately slow, so a verified header is remembered as an HMAC under a
per-process random key (never the header itself); a wrong password is never cached and is
always checked in full with ``hmac.compare_digest``. Only the ``Basic`` scheme carries
credentials. An address that keeps failing is throttled (throttle.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import secrets
import threading
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from adapter.config import UserConfig, verify_password
from adapter.errors import AuthError, ForbiddenError, TooManyRequestsError
from adapter.server.throttle import LoginThrottle

_DUMMY_HASH_CACHE: dict[str, str] = {}


class WrongCredentialsError(AuthError):
    """Well-formed Basic credentials that failed the scrypt check (what the throttle counts)."""


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

    def cached(self, header: str | None) -> Principal | None:
        """The principal for an already verified header, else None (cheap; no scrypt)."""
        if not self.required:
            return Principal("anonymous", read_only=False)
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":  # the same token under another scheme is no credential
            return None
        return self._cache.get(self._tag(token.strip()))

    def _tag(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode("utf-8", "replace"), hashlib.sha256).digest()

    def authenticate(self, header: str | None) -> Principal:
        if not self.required:
            return Principal("anonymous", read_only=False)
        if not header:
            raise AuthError("authentication required: send HTTP Basic credentials "
                            "(the instance username and password)", "header authorization")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            raise AuthError("unsupported authorization scheme: use HTTP Basic", "header authorization")
        tag = self._tag(token.strip())
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
            raise WrongCredentialsError("wrong username or password", "header authorization")
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


async def reader(request: Request) -> Principal:
    """FastAPI dependency: any authenticated user.

    Async so that the common case (a header verified before) costs no thread hop; a first
    sight of a header runs the slow scrypt check in the thread pool, off the event loop.
    """
    auth: Authenticator = request.app.state.auth
    header = request.headers.get("authorization")
    principal = auth.cached(header)
    if principal is None:
        principal = await _verify(request, auth, header)
    request.state.user = principal.username
    return principal


async def _verify(request: Request, auth: Authenticator, header: str | None) -> Principal:
    """The slow check, unless the client's address has failed too often lately (throttle.py)."""
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else ""
    wait = throttle.retry_after(address)
    if wait is not None:
        await asyncio.sleep(min(wait, throttle.hold_s))
        seconds = math.ceil(wait)
        raise TooManyRequestsError(f"too many failed logins from this address; try again in {seconds} s",
                                   "header authorization", retry_after=seconds)
    try:
        return await run_in_threadpool(auth.authenticate, header)
    except WrongCredentialsError:
        throttle.failed(address)
        raise


async def writer(request: Request) -> Principal:
    """FastAPI dependency: an authenticated user that may write."""
    principal = await reader(request)
    if principal.read_only:
        raise ForbiddenError(f"user '{principal.username}' is read-only", f"{request.method} {request.url.path}")
    return principal
