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
        self.accepted = accepted
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
    """The cluster's parse endpoint rejected the rendered HCL.

    ``line`` is the rendered line Nomad pointed at and ``said`` its diagnostic,
    when its answer named one (``api.diagnosis.parse_rejection``).
    """

    headline = "Nomad rejected the rendered jobspec"

    def __init__(self, msg: str, line: int | None = None, said: str | None = None):
        self.line = line
        self.said = said
        super().__init__(msg)


def sentence(text: str) -> str:
    """A clause that may also stand alone, with its first letter in capitals: a
    message is written once, as the clause doctor's lines need."""
    return text[:1].upper() + text[1:]


class NomadClientError(NomadException):
    """The Nomad API answered with an error, or could not be reached.

    Built from data, once: ``detail`` says what went wrong and what to change (for
    messages that name their own context: the preflight, ``doctor``), ``request``
    names the request ("GET /v1/jobs") and ``status`` is the HTTP status Nomad
    answered with, if it did.  Callers tell failures apart by subclass: only
    ``api.diagnosis.classify_failure`` reads Nomad's status and answer, because
    Nomad has no error codes to read instead.
    """

    headline = "Nomad API error"

    def __init__(self, detail: str, request: str | None = None, status: int | None = None):
        self.detail = detail
        self.request = request
        self.status = status
        super().__init__(self._told())

    def _told(self) -> str:
        if self.request is None:
            return self.detail
        answered = "" if self.status is None else f" returned HTTP {self.status}"
        return f"{self.request}{answered}: {self.detail}"

    def without_request(self) -> NomadClientError:
        """The same error (class and data) told without its request: a first contact
        is about the cluster, not about the one request that tried it."""
        told = type(self).__new__(type(self))
        told.__dict__.update(vars(self), request=None)
        told.message = sentence(self.detail)
        return told


class NomadUnreachable(NomadClientError):
    """Nothing answered at the configured address."""

    headline = "Nomad connection error"


class NomadTlsError(NomadClientError):
    """Something answered, but the TLS handshake failed."""

    headline = "Nomad TLS error"


class NomadTlsMismatch(NomadTlsError):
    """Plain HTTP was sent to a server that speaks HTTPS, or HTTPS to one that does
    not: the address's scheme is wrong, whatever the certificates."""


class NomadNotFound(NomadClientError):
    """Nomad has no such object (HTTP 404), or a task has not started, so it has no
    logs yet: callers asking whether something exists treat this as "no"."""


class NomadBadRequest(NomadClientError):
    """Nomad refused the request itself (HTTP 400), e.g. HCL its parser rejects.

    ``reason`` is Nomad's objection without its "Failed to parse job" preamble.
    """

    def __init__(
        self, detail: str, request: str | None = None, status: int | None = None, *, reason: str
    ):
        self.reason = reason
        super().__init__(detail, request, status)


class NomadAclDisabled(NomadClientError):
    """An ACL endpoint was asked, and the cluster does not enforce ACLs at all."""


class NomadForbidden(NomadClientError):
    """Nomad denied the request (HTTP 403).

    Nomad says only "Permission denied"; ``explanation`` is why, in terms of the
    token (unknown, or lacking a capability in the namespace) and what to set.
    """

    def __init__(
        self,
        detail: str,
        request: str | None = None,
        status: int | None = None,
        *,
        explanation: str,
    ):
        self.explanation = explanation
        super().__init__(detail, request, status)


class NomadTokenMissing(NomadForbidden):
    """Denied, and no ACL token was sent: the cluster enforces ACLs."""


class NomadUnknownNamespace(NomadClientError):
    """The request names a namespace the cluster does not have."""


class NomadUnknownNodePool(NomadClientError):
    """The job asks for a node pool the cluster does not have (named in ``node_pool``)."""

    def __init__(
        self,
        detail: str,
        request: str | None = None,
        status: int | None = None,
        *,
        node_pool: str,
    ):
        self.node_pool = node_pool
        super().__init__(detail, request, status)


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


class NomadSettingsErrors(NomadException):
    """Several problems found before a run's first task, reported together.

    A user with three bad values should not need three runs to learn of them: the
    checks record every problem of every step and raise them at once.  Each
    problem keeps its own one-line message (``NomadSettingsError``'s format for a
    bad value) and is one line of this error's message.
    """

    headline = "Invalid @nomad settings"

    def __init__(self, problems: list[NomadException]):
        self.problems = list(problems)
        super().__init__("\n".join(problem.message for problem in self.problems))


def raise_problems(problems: list[NomadException]) -> None:
    """Raise nothing, the one problem as it is, or all of them in one error.

    A single problem keeps its own class and headline, so its output is what it
    was before problems were gathered.
    """
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise NomadSettingsErrors(problems)


def problems_of(error: NomadException) -> list[NomadException]:
    """The single problems an error raised by ``raise_problems`` holds."""
    return list(error.problems) if isinstance(error, NomadSettingsErrors) else [error]
