"""Service settings: one pydantic model loaded from a YAML file plus the environment.

Example ``config.yaml``::

    engine: {kind: embedded, data_dir: ./data}        # or {kind: opensearch, url: https://...}
    models: ./models.yaml                              # ModelRegistry config (None: defaults)
    users:
      - {username: admin, password_hash: "scrypt$16384$8$1$<salt>$<hash>"}
      - {username: reader, password: "plain text is hashed at load", read_only: true}
    limits: {max_body_bytes: 20971520}
    access: {source_roots: [/srv/tables], bucket_roots: [/srv/images],
             object_store_endpoints: ["https://oss-cn-hangzhou.aliyuncs.com"]}
    host: 0.0.0.0
    port: 8080

``HA3_ADAPTER_USERNAME`` / ``HA3_ADAPTER_PASSWORD`` give the first user (hashed in memory,
never written anywhere). Passwords are only ever kept as salted scrypt hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapter.engines.factory import EngineConfig
from adapter.errors import ConfigError

# scrypt cost: ~20 ms per hash on one core; verified credentials are cached per process
# (see adapter.server.auth) so this cost is paid once per distinct Authorization header.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (Base64 parts) for ``password``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, password_hash: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = password_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(hash_b64)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt_b64),
                             n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class UserConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1)
    password_hash: str = ""
    read_only: bool = False

    @model_validator(mode="before")
    @classmethod
    def _hash_plain_password(cls, data: Any) -> Any:
        # A plain ``password`` in the YAML is accepted for convenience and hashed at once.
        if isinstance(data, dict) and "password" in data:
            data = dict(data)
            plain = data.pop("password")
            if not data.get("password_hash"):
                data["password_hash"] = hash_password(str(plain))
        return data

    @model_validator(mode="after")
    def _need_hash(self) -> "UserConfig":
        if not self.password_hash.startswith("scrypt$"):
            raise ValueError(f"user {self.username!r}: password_hash must be a scrypt$... string "
                             "(make one with `ha3-adapter hash-password`) or give `password`")
        return self

    def __repr__(self) -> str:  # never show hashes in logs
        return f"UserConfig(username={self.username!r}, read_only={self.read_only})"


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 20 MiB: a push batch or a Base64 query image well above normal sizes; a 30 MB image
    # gets a 413 naming the limit.
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0)
    # An HA query in a GET URL (the SDK's default search puts the Base64 image there) or a
    # POST body; URLs longer than this (plus 8 KiB of path) get a 414.
    max_query_string_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_push_documents: int = Field(10_000, gt=0)  # commands per push request
    # Failed logins per client address within the window before that address gets 429s
    # (adapter/server/throttle.py); 0 turns the throttle off (a proxy in front throttles).
    max_failed_logins: int = Field(10, ge=0)
    failed_login_window_s: float = Field(60.0, gt=0)


class AccessConfig(BaseModel):
    """Where the service may read on its clients' behalf, besides its own data directory
    (see adapter.sources.access). Empty lists: the data directory only, and no endpoint
    other than the provider default (AWS S3)."""

    model_config = ConfigDict(extra="forbid")

    source_roots: list[Path] = Field(default_factory=list)  # table files / SQLite a reindex may read
    bucket_roots: list[Path] = Field(default_factory=list)  # folders a table may use as a file:// bucket
    # S3/OSS endpoints a schema or pipeline may name: "https://oss-cn-hangzhou.aliyuncs.com",
    # "127.0.0.1:9000" (any scheme), "*.aliyuncs.com" (any subdomain).
    object_store_endpoints: list[str] = Field(default_factory=list)


def _default_engine() -> EngineConfig:
    return EngineConfig(kind="embedded", data_dir=Path("./data"))


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(default_factory=_default_engine)
    data_dir: Path | None = None  # service state (secrets.json, tasks); default engine.data_dir
    models: Path | None = None  # ModelRegistry config file; None = registry defaults/env
    users: list[UserConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # /openapi/ha3/instances/{instance}: "*" accepts any id, so clients keep their real
    # instance id (the vector SDK derives one from the endpoint when none is configured).
    instance_id: str = "*"
    auth_required: bool = True
    # Load the models that existing tables use before accepting connections, so the first
    # query is not slow and /health answering means ready.
    warm_up: bool = True

    @property
    def state_dir(self) -> Path:
        return Path(self.data_dir or self.engine.data_dir)

    @classmethod
    def load(cls, path: str | Path | None = None, *, env: Mapping[str, str] = os.environ,
             overrides: dict[str, Any] | None = None) -> "Settings":
        """YAML file (optional) + ``overrides`` (CLI flags) + env users. ConfigError on bad input."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                text = Path(path).read_text(encoding="utf-8")
                loaded = yaml.safe_load(text) or {}
            except OSError as exc:
                raise ConfigError(f"cannot read config file: {exc.strerror}", str(path)) from None
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file is not valid YAML: {exc}", str(path)) from None
            if not isinstance(loaded, dict):
                raise ConfigError("config file must hold a mapping", str(path))
            raw = loaded
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key == "data_dir":  # --data-dir: the embedded engine's directory and our state
                eng = dict(raw.get("engine") or {})
                eng["data_dir"] = str(value)
                eng.setdefault("kind", "embedded")
                raw["engine"] = eng
            else:
                raw[key] = value
        try:
            settings = cls.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = "$." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "$"
            raise ConfigError(f"invalid configuration: {err['msg']}", loc) from None
        user, password = env.get("HA3_ADAPTER_USERNAME"), env.get("HA3_ADAPTER_PASSWORD")
        if user and password:
            env_user = UserConfig(username=user, password_hash=hash_password(password))
            settings.users = [env_user] + [u for u in settings.users if u.username != user]
        elif user or password:
            raise ConfigError("set both HA3_ADAPTER_USERNAME and HA3_ADAPTER_PASSWORD, or neither",
                              "environment")
        return settings
