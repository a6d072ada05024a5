"""Object stores that hold the images a table points at: S3-compatible buckets and local dirs.

One small interface, ``ObjectStore.get(key) -> bytes``, two implementations:

- ``S3Store``: boto3's S3 client. Works with AWS S3, MinIO and Alibaba OSS's S3-compatible
  endpoint (``https://s3.oss-<region>.aliyuncs.com``, virtual-host addressing). Retries
  with backoff and connect/read timeouts come from botocore's ``Config``.
- ``LocalDirStore``: a directory used as a bucket (``file:///srv/images``).

Keys as the seed writes them. The HA3 guide stores ``/Test image/image/10031.png`` in the
table: the leading slash means "from the bucket root", the OSS object key itself is
``Test image/image/10031.png``. We therefore try the key WITHOUT the leading slash first,
and the key exactly as given second (S3 allows object keys that really start with ``/``).
Spaces and other characters are sent as they are (boto3 URL-encodes them).

Errors are ``SourceError`` subclasses with a short ``reason`` (missing_object,
access_denied, timeout, store_error) and the bucket/key in the message, never credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, SecretStr

from adapter.errors import SourceError
from adapter.schema.model import ObjectStoreSpec


# --------------------------------------------------------------------------- errors


class ObjectStoreError(SourceError):
    reason = "store_error"


class MissingObjectError(ObjectStoreError):
    reason = "missing_object"
    code = 4021


class AccessDeniedError(ObjectStoreError):
    reason = "access_denied"
    code = 4022


class StoreTimeoutError(ObjectStoreError):
    reason = "timeout"
    code = 4023


# --------------------------------------------------------------------------- config


class ObjectStoreConfig(BaseModel):
    """Where images live. Any credential left empty falls back to the standard AWS chain
    (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, profiles, roles)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None  # "file:///dir", "s3://bucket", "oss://bucket" (bucket from the URL)
    endpoint: str | None = None  # http(s) endpoint URL; empty = AWS default
    bucket: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    access_key_id: SecretStr | None = None
    access_key_secret: SecretStr | None = None
    session_token: SecretStr | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 4  # total attempts, botocore "standard" retry mode (backoff + jitter)
    max_pool_connections: int = 32

    def merged_with(self, spec: ObjectStoreSpec | None) -> "ObjectStoreConfig":
        """Fill what this config leaves empty from a schema field's user_defined_param.

        The schema's seed placeholders ("The name of the OSS bucket") are real strings, so
        the pipeline file's values win whenever both are set.
        """
        if spec is None:
            return self
        updates: dict[str, Any] = {}
        if not self.url and not self.endpoint and spec.endpoint:
            updates["endpoint"] = spec.endpoint
        if not self.url and not self.bucket and spec.bucket:
            updates["bucket"] = spec.bucket
        if not self.access_key_id and spec.access_key_id:
            updates["access_key_id"] = spec.access_key_id
        if not self.access_key_secret and spec.access_key_secret:
            updates["access_key_secret"] = spec.access_key_secret
        return self.model_copy(update=updates)


class ObjectStore(Protocol):
    name: str  # "s3://bucket" or "file:///dir": safe to log

    def get(self, key: str) -> bytes: ...


def candidate_keys(key: str) -> list[str]:
    """The seed's '/Test image/x.png' → ['Test image/x.png', '/Test image/x.png']."""
    if key.startswith("/"):
        stripped = key.lstrip("/")
        return [stripped, key] if stripped else [key]
    return [key]


def open_store(
    spec_or_url: ObjectStoreConfig | ObjectStoreSpec | str | Mapping[str, Any],
    *,
    overrides: ObjectStoreConfig | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    client: Any = None,
) -> ObjectStore:
    """An object store from a pipeline config, a schema's ObjectStoreSpec or a URL.

    ``overrides`` (the pipeline file's values) win over the schema's; empty credentials fall
    back to the environment (``env``, default ``os.environ``) via boto3's own chain.
    """
    if overrides is None:
        config = _as_config(spec_or_url)
    elif isinstance(spec_or_url, ObjectStoreSpec):
        config = _as_config(overrides).merged_with(spec_or_url)
    else:
        over, base = _as_config(overrides), _as_config(spec_or_url)
        config = over.model_copy(update={k: getattr(base, k) for k in base.model_fields_set
                                         if getattr(over, k) in (None, "") or k not in over.model_fields_set})
    if config.url:
        parsed = urlparse(config.url)
        if parsed.scheme == "file":
            return LocalDirStore(Path(unquote(parsed.netloc + parsed.path)))
        if parsed.scheme in ("s3", "oss"):
            config = config.model_copy(update={"bucket": parsed.netloc})
        else:
            raise SourceError(f"unsupported object store URL scheme '{parsed.scheme}' (use file://, s3:// or oss://)",
                              "object_store.url")
    if not config.bucket:
        raise SourceError("object store has no bucket (set object_store.bucket or url)", "object_store.bucket")
    return S3Store(config, env=env, client=client)


def _as_config(value: Any) -> ObjectStoreConfig:
    if isinstance(value, ObjectStoreConfig):
        return value
    if isinstance(value, ObjectStoreSpec):
        return ObjectStoreConfig().merged_with(value)
    if isinstance(value, str):
        return ObjectStoreConfig(url=value)
    if isinstance(value, Mapping):
        return ObjectStoreConfig.model_validate(dict(value))
    raise SourceError(f"cannot open an object store from {type(value).__name__}")


# --------------------------------------------------------------------------- local dir


class LocalDirStore:
    """A directory as a bucket: key 'a/b.png' (or '/a/b.png') is ``root/a/b.png``."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.name = f"file://{self.root}"
        if not self.root.is_dir():
            raise SourceError(f"object store directory does not exist: {self.root}", "object_store.url")

    def get(self, key: str) -> bytes:
        path = (self.root / key.lstrip("/")).resolve()
        if path != self.root and self.root not in path.parents:
            raise AccessDeniedError(f"key escapes the bucket directory: {key!r}", self.name)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise MissingObjectError(f"missing object {key!r}", self.name) from None
        except IsADirectoryError:
            raise MissingObjectError(f"missing object {key!r} (a directory)", self.name) from None
        except PermissionError:
            raise AccessDeniedError(f"access denied to {key!r}", self.name) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read {key!r}: {exc.strerror}", self.name) from None


# --------------------------------------------------------------------------- S3


class S3Store:
    """boto3 S3 client bound to one bucket. Thread-safe (boto3 clients are)."""

    def __init__(self, config: ObjectStoreConfig, *, env: Mapping[str, str] | None = None, client: Any = None):
        self.config = config
        self.bucket = config.bucket or ""
        self.name = f"s3://{self.bucket}"
        self.client = client or _make_client(config, os.environ if env is None else env)

    def get(self, key: str) -> bytes:
        last: ObjectStoreError | None = None
        for candidate in candidate_keys(key):
            try:
                return self._get_exact(candidate)
            except MissingObjectError as exc:
                last = exc
        assert last is not None
        raise MissingObjectError(f"missing object {key!r} in {self.name}", self.name) from None

    def _get_exact(self, key: str) -> bytes:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError as BotoConnectionError,
            ConnectTimeoutError,
            ReadTimeoutError,
        )

        attempts = self.config.max_attempts
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                raise MissingObjectError(f"missing object {key!r}", self.name) from None
            if code == "NoSuchBucket":
                raise ObjectStoreError(f"bucket does not exist: {self.bucket!r} (reading {key!r})", self.name) from None
            if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                raise AccessDeniedError(f"access denied to {key!r} ({code or status})", self.name) from None
            if isinstance(status, int) and status >= 500:
                raise ObjectStoreError(
                    f"object store error {status} {code} for {key!r} after {attempts} attempts", self.name
                ) from None
            raise ObjectStoreError(f"object store refused {key!r}: {code or status}", self.name) from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise StoreTimeoutError(f"timeout reading {key!r} after {attempts} attempts", self.name) from None
        except BotoConnectionError as exc:
            raise StoreTimeoutError(
                f"cannot reach the object store reading {key!r} after {attempts} attempts ({type(exc).__name__})",
                self.name,
            ) from None
        except BotoCoreError as exc:  # bad bucket name, missing credentials, ...: no secrets in these
            raise ObjectStoreError(f"cannot read {key!r}: {type(exc).__name__}: {exc}", self.name) from None


def _make_client(config: ObjectStoreConfig, env: Mapping[str, str]):
    import boto3
    from botocore.config import Config

    botocore_config = Config(
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        retries={"total_max_attempts": config.max_attempts, "mode": "standard"},
        s3={"addressing_style": config.addressing_style},
        max_pool_connections=config.max_pool_connections,
        signature_version="s3v4",
    )

    def secret(value: SecretStr | None, *env_names: str) -> str | None:
        if value is not None and value.get_secret_value():
            return value.get_secret_value()
        return next((env[n] for n in env_names if env.get(n)), None)

    endpoint = config.endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if endpoint and "://" not in endpoint:
        endpoint = "https://" + endpoint  # OSS consoles show endpoints without a scheme
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=endpoint,
        region_name=config.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        aws_access_key_id=secret(config.access_key_id, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=secret(config.access_key_secret, "AWS_SECRET_ACCESS_KEY"),
        aws_session_token=secret(config.session_token, "AWS_SESSION_TOKEN"),
        config=botocore_config,
    )
