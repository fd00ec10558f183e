"""Every error dbt-celery raises, under one base class.

    DbtCeleryError
    ├── ConfigurationError      something the user gave us cannot work
    │   ├── ProjectNotFound     no dbt project at the given path
    │   ├── ProfileError        missing, unknown or broken profile / target
    │   ├── SelectionError      a selector that is invalid or matches nothing
    │   └── UnsupportedBackend  a result backend the status store cannot use
    ├── DbtInvocationError      dbt itself could not run (crash, bad flags, exit 2)
    ├── PayloadError            a status payload that is corrupt, oversized or not ours
    ├── StoreUnavailable        the status store cannot be reached (after retrying)
    └── NodeError               why a consumer task ended without building its node
        ├── NodeFailed          dbt reported the node as failed
        ├── UpstreamFailed      a node this one depends on failed for good
        ├── ProducerFailed      the producer died or failed before reporting the node
        ├── WaitTimedOut        the run's timeout passed while the node was still open
        ├── RunCancelled        the run was cancelled before the node was built
        └── ConsumerCrashed     the consumer itself broke (a bug or a broken record)

NodeError subclasses travel through Celery's result backend as JSON, so their
constructors take a single message string.
"""

from __future__ import annotations

from typing import Any


class DbtCeleryError(Exception):
    """Base class of every error raised by dbt-celery."""


class ConfigurationError(DbtCeleryError):
    """The run specification, profile, project or Celery setup cannot work."""


class ProjectNotFound(ConfigurationError):
    """The project directory does not exist or holds no ``dbt_project.yml``."""


class ProfileError(ConfigurationError):
    """The profile or target is missing, unknown or invalid."""


class SelectionError(ConfigurationError):
    """A ``--select``/``--exclude``/``--selector`` is invalid or selects nothing."""


class UnsupportedBackend(ConfigurationError):
    """The Celery result backend cannot serve as a cross-process status store."""


class DbtInvocationError(DbtCeleryError):
    """dbt could not run to completion (as opposed to nodes failing inside a run)."""


class PayloadError(DbtCeleryError):
    """A stored status payload could not be decoded: corrupt, oversized or foreign."""


class StoreUnavailable(DbtCeleryError):
    """The status store (the result backend, or dbt-celery's own store) cannot be reached or written."""


class BuildFailed(DbtCeleryError):
    """The producer's dbt build did not succeed; ``summary`` is what the producer returns otherwise."""

    def __init__(self, message: str, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message, summary or {})
        self.summary = summary or {}

    def __str__(self) -> str:
        return str(self.args[0])


class NodeError(DbtCeleryError):
    """A consumer ended without a built node; the subclass says why."""

    reason: str = "failed"


class NodeFailed(NodeError):
    """dbt (the producer's build or the consumer's own fallback) failed the node."""

    reason = "node_failed"


class UpstreamFailed(NodeError):
    """A node upstream of this one failed for good, so this one was never built."""

    reason = "upstream_failed"


class ProducerFailed(NodeError):
    """The producer died or failed before it reported this node, and no retry was left."""

    reason = "producer_failed"


class WaitTimedOut(NodeError):
    """The run's timeout passed before the node reached a final state."""

    reason = "timed_out"


class RunCancelled(NodeError):
    """The run was cancelled (``DbtRun.cancel()``, Ctrl-C) before the node was built."""

    reason = "cancelled"


class ConsumerCrashed(NodeError):
    """The consumer raised something unexpected; the message says what."""

    reason = "error"
