"""One exception family for the whole package.

Every error carries an HA3-style numeric ``code``, the HTTP status a service would answer
with, a human message, and ``location``: the JSON path (``$.indexs[1].parameters.dimension``)
or query offset (``query offset 17``) at fault. Formatters turn these into the response
shape each client expects; nothing here knows about HTTP frameworks or response formats.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error this package raises on purpose."""

    code: int = 1000
    http_status: int = 400

    def __init__(self, message: str, location: str | None = None, *, code: int | None = None):
        self.message = message
        self.location = location
        if code is not None:
            self.code = code
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} (at {self.location})" if self.location else self.message

    def to_dict(self) -> dict:
        """HA3's error item: ``{"code": ..., "message": ...}``."""
        return {"code": self.code, "message": str(self)}


class SchemaError(AdapterError):
    """The uploaded HA3 schema is malformed or asks for something we cannot build."""

    code = 4001


class QueryError(AdapterError):
    """A query string or vector-service request is malformed."""

    code = 2001


class NotFoundError(AdapterError):
    """A table, document or task does not exist."""

    code = 4004
    http_status = 404


class ConflictError(AdapterError):
    """A table that already exists, a rebuild already running, and the like."""

    code = 4009
    http_status = 409


class AuthError(AdapterError):
    """Missing or wrong credentials."""

    code = 4010
    http_status = 401


class ForbiddenError(AdapterError):
    """Authenticated, but not allowed (a read-only user writing)."""

    code = 4030
    http_status = 403


class AccessError(AdapterError):
    """A path, bucket folder or endpoint outside what the operator allowed, or stored
    credentials asked for somewhere they were not given for."""

    code = 4031
    http_status = 403


class PayloadTooLargeError(AdapterError):
    """A request body or image over the configured limits."""

    code = 4013
    http_status = 413


class UriTooLongError(AdapterError):
    """A request URL over the limit (the HTTP parser's cap)."""

    code = 4014
    http_status = 414


class HeadersTooLargeError(AdapterError):
    """A request's header block over the limit."""

    code = 4016
    http_status = 431


class TooManyRequestsError(AdapterError):
    """Too many failed logins from one address lately; ``retry_after`` seconds to wait."""

    code = 4029
    http_status = 429

    def __init__(self, message: str, location: str | None = None, *, retry_after: int):
        super().__init__(message, location)
        self.retry_after = retry_after


class ImageError(AdapterError):
    """Bytes that are not a decodable image, or one over the pixel/byte limits."""

    code = 4015


class EmbedError(AdapterError):
    """The embedding model is missing, misconfigured or failed on valid input."""

    code = 5003
    http_status = 503


class SourceError(AdapterError):
    """A data source (object store, table) could not be read."""

    code = 4020


class EngineError(AdapterError):
    """The storage/search engine rejected a request or is unreachable."""

    code = 5002
    http_status = 502


class EngineUnavailableError(EngineError):
    """The engine cannot answer completely right now (nodes down, shards unassigned, queues
    full): try again later. Never a partial answer instead."""

    code = 5004
    http_status = 503


class ConfigError(AdapterError):
    """The service or pipeline configuration is invalid."""

    code = 4002


class StorageUnavailableError(AdapterError):
    """The data directory refuses writes (read-only, permissions, I/O errors)."""

    code = 5030
    http_status = 503


class InsufficientStorageError(AdapterError):
    """The data directory's disk is full."""

    code = 5070
    http_status = 507
