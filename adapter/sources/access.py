"""What the service may touch on behalf of its clients: folders, object-store endpoints, keys.

One place for three rules, so that push, reindex and thumbnails cannot drift apart:

- Paths: table files, SQLite sources and ``file://`` bucket folders must lie inside the
  service's data directory or a folder the operator listed (``access.source_roots`` for
  tables, ``access.bucket_roots`` for buckets). Symlinks are resolved first.
- Endpoints: an S3/OSS endpoint must be on the operator's allow-list
  (``access.object_store_endpoints``); an empty endpoint is the provider default (AWS).
  Otherwise a schema or pipeline could make the server send requests anywhere (SSRF).
- Credentials: keys kept in the SecretStore go only to the endpoint and bucket they were
  stored with. A pipeline that names another place must bring its own keys, or is refused.

``AccessRules.unrestricted()`` is for the operator's own CLI runs (their files, their keys);
the HTTP service always runs with ``AccessRules.from_settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlparse

from adapter.errors import AccessError
from adapter.schema.model import ObjectStoreSpec
from adapter.sources.objectstore import LocalDirStore, ObjectStore, ObjectStoreConfig, S3Store, open_store

_DEFAULT_PORTS = {"http": 80, "https": 443}


def endpoint_key(endpoint: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of an endpoint as boto would reach it ('' is the provider default)."""
    text = (endpoint or "").strip()
    if not text:
        return ("", "", None)
    parsed = urlparse(text if "://" in text else "https://" + text)  # boto adds https:// too
    scheme = parsed.scheme.lower()
    try:
        port = parsed.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = -1  # an unparsable port never matches an allow-list entry
    return (scheme, (parsed.hostname or "").lower(), port)


def local_path(url: str) -> Path | None:
    """The folder of a ``file://`` URL, or None for anything else."""
    if not (url or "").strip().lower().startswith("file://"):
        return None
    parsed = urlparse(url.strip())
    return Path(unquote(parsed.netloc + parsed.path))


class _Allowed:
    """One allow-list entry: ``https://host[:port]``, ``host[:port]`` (any scheme) or ``*.domain``."""

    def __init__(self, entry: str):
        self.entry = entry
        self.any_scheme = "://" not in entry
        self.scheme, host, self.port = endpoint_key(entry)
        self.suffix = host[1:] if host.startswith("*.") else None
        self.host = host
        if self.any_scheme and ":" not in entry.split("/", 1)[0]:
            self.port = None  # a bare host matches any port

    def matches(self, key: tuple[str, str, int | None]) -> bool:
        scheme, host, port = key
        if not self.any_scheme and scheme != self.scheme:
            return False
        if self.port is not None and port != self.port:
            return False
        return host.endswith(self.suffix) if self.suffix else host == self.host


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class AccessRules:
    def __init__(self, *, source_roots: Iterable[Path] = (), bucket_roots: Iterable[Path] = (),
                 endpoints: Iterable[str] = (), restricted: bool = True):
        self.source_roots = tuple(Path(r).resolve() for r in source_roots)
        self.bucket_roots = tuple(Path(r).resolve() for r in bucket_roots)
        self.endpoints = tuple(_Allowed(e) for e in endpoints if str(e).strip())
        self.restricted = restricted

    @classmethod
    def unrestricted(cls) -> "AccessRules":
        return cls(restricted=False)

    @classmethod
    def from_settings(cls, settings: Any) -> "AccessRules":
        state = Path(settings.state_dir)
        access = getattr(settings, "access", None)
        return cls(source_roots=[state, *getattr(access, "source_roots", [])],
                   bucket_roots=[state, *getattr(access, "bucket_roots", [])],
                   endpoints=getattr(access, "object_store_endpoints", []))

    # -- paths ---------------------------------------------------------------------------
    def source_path(self, path: str | Path, where: str) -> Path:
        """``path`` resolved; AccessError unless it lies inside a source root."""
        return self._confined(Path(path), self.source_roots, "access.source_roots", where)

    def bucket_dir(self, path: str | Path, where: str) -> Path:
        return self._confined(Path(path), self.bucket_roots, "access.bucket_roots", where)

    def _confined(self, path: Path, roots: tuple[Path, ...], key: str, where: str) -> Path:
        resolved = path.expanduser().resolve()
        if self.restricted and not _inside(resolved, roots):
            raise AccessError(f"{path} is outside the folders this service may use (its data directory "
                              f"and {key} in the service configuration)", where)
        return resolved

    # -- endpoints -----------------------------------------------------------------------
    def check_endpoint(self, endpoint: str, where: str) -> None:
        key = endpoint_key(endpoint)
        if not self.restricted or key[1] == "" and key[0] == "":
            return
        if not any(entry.matches(key) for entry in self.endpoints):
            raise AccessError(f"object store endpoint {endpoint!r} is not on this service's allow-list "
                              "(access.object_store_endpoints in the service configuration)", where)

    def check_store_spec(self, store: ObjectStoreSpec, where: str) -> None:
        """A schema's oss field: its file:// folder or its endpoint must be allowed."""
        folder = local_path(store.endpoint)
        if folder is not None:
            self.bucket_dir(folder, where)
        else:
            self.check_endpoint(store.endpoint, where)


def _same_place(stored: ObjectStoreSpec, config: ObjectStoreConfig) -> bool:
    return endpoint_key(stored.endpoint) == endpoint_key(config.endpoint or "") and stored.bucket == (config.bucket or "")


def _target(schema: ObjectStoreSpec | None, pipeline: ObjectStoreConfig | None) -> ObjectStoreConfig:
    """Where to read: the pipeline's settings over the schema's endpoint and bucket."""
    if pipeline is None:
        return ObjectStoreConfig().merged_with(schema)
    # The schema's keys are the operator's own file (CLI); stored keys are handled apart.
    return pipeline.merged_with(schema)


def open_table_store(rules: AccessRules, *, schema: ObjectStoreSpec | None, stored: ObjectStoreSpec | None = None,
                     pipeline: ObjectStoreConfig | None = None, where: str = "object_store") -> ObjectStore:
    """The object store a table's images are read from, under ``rules``.

    ``schema``: the table's oss field (credentials, if any, came with the schema file);
    ``stored``: the SecretStore's entry for that field (endpoint, bucket and keys);
    ``pipeline``: a rebuild pipeline's ``source.image.object_store`` (wins where set)."""
    config = _target(schema, pipeline)
    if config.url and config.url.lower().startswith(("s3://", "oss://")):
        config = config.model_copy(update={"bucket": urlparse(config.url).netloc, "url": None})
    folder = local_path(config.url or "") or local_path(config.endpoint or "")
    if folder is not None:
        return LocalDirStore(rules.bucket_dir(folder, where))
    if config.url:
        return open_store(config)  # an unsupported scheme: open_store names it
    rules.check_endpoint(config.endpoint or "", where)
    has_own_keys = bool(config.access_key_id and config.access_key_id.get_secret_value())
    if not has_own_keys and stored is not None and stored.has_credentials:
        if not _same_place(stored, config):
            raise AccessError(
                f"the table's stored credentials are for endpoint {stored.endpoint or '(default)'!r} bucket "
                f"{stored.bucket!r}, not endpoint {config.endpoint or '(default)'!r} bucket {config.bucket!r}: "
                "give access_key_id and access_key_secret for that store", where)
        config = config.model_copy(update={"access_key_id": stored.access_key_id,
                                           "access_key_secret": stored.access_key_secret})
    if not config.bucket:
        return open_store(config)  # raises: no bucket
    return S3Store(config)


class UnavailableStore:
    """Stands in for a store that may not be opened: each read fails with the reason, so a
    push reports it per document instead of failing the whole request."""

    def __init__(self, error: Exception):
        self.error = error
        self.name = "unavailable"

    def get(self, key: str) -> bytes:
        raise self.error
