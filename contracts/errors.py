"""The error classes of each boundary. Every error the platform raises on purpose is a ``PlatformError``
whose message names what failed (the file, line and field; the table; the server) and what to do.

    PlatformError
    ├── InputDataError        raw files -> the batch: a file, line or field that cannot be read
    ├── DependencyError       what a stage reads from an earlier stage or a server is not usable now
    │   ├── ArtifactError     a declared table, export or model is missing, of another spec, or inconsistent
    │   │   ├── NotPublishedError   not produced yet: run the stage named in the message
    │   │   └── SpecMismatchError   produced under another feature-spec version
    │   └── StoreUnavailableError   a server (Redis, Elasticsearch, Feast, Triton) does not answer
    ├── PublishCheckError     what a stage is about to publish fails its check: nothing was published
    └── CommandError          a command the platform started (a stage, a local server) failed

The service loads its bundle while a ``DependencyError`` says it cannot yet, and answers a 503 naming the
store on a ``StoreUnavailableError``; the batch stops before writing on an ``InputDataError``.
"""

from __future__ import annotations


class PlatformError(Exception):
    """Raised on purpose by the platform; the message says what and what to do."""


class InputDataError(PlatformError, ValueError):
    """The raw input cannot be read as a MovieLens dataset (the message names the file, line and field)."""


class DependencyError(PlatformError, RuntimeError):
    """What a stage reads from an earlier stage or from a server is not usable now."""


class ArtifactError(DependencyError):
    """A declared table, export or model is missing, of another spec, or inconsistent with the others."""


class NotPublishedError(ArtifactError):
    """The batch run, a model or a loader's output has not been produced yet."""


class SpecMismatchError(ArtifactError):
    """Data or a model was produced under another feature-spec version than the code's."""


class StoreUnavailableError(DependencyError):
    """A server the request path reads does not answer; ``store`` names it (the service's 503 says which)."""

    def __init__(self, store: str, detail: str) -> None:
        super().__init__(f"{store} unavailable: {detail}")
        self.store = store


class PublishCheckError(PlatformError, RuntimeError):
    """What a stage is about to publish fails its check (it shrank, reads back different, scores differ)."""


class CommandError(PlatformError, RuntimeError):
    """A command or server the platform started failed; its output says why."""


class VerificationError(PublishCheckError):
    """What a loader wrote to a store reads back different from its source (the previous version keeps
    serving)."""
