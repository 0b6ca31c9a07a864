"""Exceptions shown to users.

They derive from MetaflowException when Metaflow is importable, so that the
Metaflow CLI prints them as a clean headline and message instead of a traceback.
"""

from __future__ import annotations

from metaflow.exception import MetaflowException


class NomadException(MetaflowException):
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
