"""Exceptions shown to users.

In a process that has loaded Metaflow they derive from ``MetaflowException``,
so that Metaflow's CLI prints them as a clean headline and message instead of a
traceback.  The per-attempt launcher (``runtime.attempt``) never loads Metaflow,
which is most of why it is small and quick; there they derive from a plain
exception with the same ``headline``/``message`` interface, and the launcher
prints them itself.
"""

from __future__ import annotations

import sys


class _HeadlineException(Exception):
    """``MetaflowException``'s interface, for a process without Metaflow."""

    headline = "Error"

    def __init__(self, msg: str = "", lineno: int | None = None, source_file: str | None = None):
        self.message = msg
        self.line_no = lineno
        self.source_file = source_file
        super().__init__(msg)

    def __str__(self) -> str:
        return self.message


def _exception_base() -> type[Exception]:
    loaded = sys.modules.get("metaflow.exception")
    return loaded.MetaflowException if loaded is not None else _HeadlineException


class NomadException(_exception_base()):
    headline = "Nomad error"


class NomadSettingsError(NomadException):
    """A decorator, --with, config or project-defaults value is invalid."""

    headline = "Invalid @nomad setting"

    def __init__(self, step: str, setting: str, value: object, accepted: str, source: str):
        self.step = step
        self.setting = setting
        self.value = value
        self.source = source
        msg = (
            f"Step '{step}': setting '{setting}' = {value!r} (from {source}) is not valid. "
            f"Expected {accepted}."
        )
        super().__init__(msg)


class NomadTemplateError(NomadException):
    """A template cannot be found, loaded, rendered, or is for another API version."""

    headline = "Nomad template error"


class NomadParseError(NomadException):
    """The cluster's parse endpoint rejected the rendered HCL."""

    headline = "Nomad rejected the rendered jobspec"


class NomadClientError(NomadException):
    """The Nomad API answered with an error, or could not be reached.

    ``detail`` is the explanation without the request it came from, for messages
    that name their own context (the preflight, ``doctor``).
    """

    headline = "Nomad API error"

    def __init__(self, msg: str, status: int | None = None, detail: str | None = None):
        self.status = status
        self.detail = detail or msg
        super().__init__(msg)


class NomadUnreachable(NomadClientError):
    """Nothing answered at the configured address."""

    headline = "Nomad connection error"


class NomadTlsError(NomadClientError):
    """Something answered, but the TLS handshake failed."""

    headline = "Nomad TLS error"


class NomadPreflightError(NomadClientError):
    """The check before a run's first task found the cluster unusable for it."""

    headline = "Nomad is not ready for this run (nothing was submitted)"


class NomadJobFailed(NomadException):
    """The task ran on Nomad and failed: retryable by @retry."""

    headline = "Nomad task failed"


class NomadJobKilled(NomadException):
    """The job was stopped from outside, or by us on a signal: not retried."""

    headline = "Nomad task killed"


def one_line_error(exc: Exception) -> str:
    """A user or cluster error before a task ran, as one line: headline and message."""
    if isinstance(exc, NomadException):
        return f"{exc.headline}: {exc.message}"
    return f"{exc.__class__.__name__}: {exc}"
