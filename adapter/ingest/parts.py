"""What push and rebuild need from the service, whoever runs them (server, CLI, tests).

A service Runtime hands over its engine, embedder, access rules, stored credentials and
state folder (``Runtime.ingest_parts``); the CLI and tests give just an engine and an
embedder, which then run under the operator's own (unrestricted) rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Union

from adapter.embed.base import Embedder
from adapter.plan.engine import Engine
from adapter.sources.access import AccessRules

if TYPE_CHECKING:  # the runtime builds IngestParts; naming its types here is no dependency
    from adapter.runtime import SecretStore


@dataclass
class IngestParts:
    engine: Engine
    embedder: Embedder | None
    access: AccessRules = field(default_factory=AccessRules.unrestricted)
    secrets: "SecretStore | None" = None  # object-store keys per table and field
    state_dir: Path | None = None  # where rebuild journals live (a service's state folder)


class HasIngestParts(Protocol):
    def ingest_parts(self) -> IngestParts: ...


PartsSource = Union[IngestParts, tuple, HasIngestParts]


def parts_of(source: PartsSource) -> IngestParts:
    """IngestParts from a Runtime, an ``(engine, embedder)`` pair or IngestParts themselves."""
    if isinstance(source, IngestParts):
        return source
    if isinstance(source, tuple):
        return IngestParts(*source)
    return source.ingest_parts()
