"""The one classifier of failed requests: each answer Nomad gives (status and words)
or failure to answer becomes the error class callers catch, with the message the
user reads and whether the client retries.  Fake answers here; what real agents
answer is covered in tests/integration/test_faults.py, test_security.py and
test_doctor.py."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.diagnosis import classify_failure
from metaflow_nomad.api.transport import HttpError, NoAnswer, Response
from metaflow_nomad.errors import (
    NomadAclDisabled,
    NomadBadRequest,
    NomadClientError,
    NomadForbidden,
    NomadNotFound,
    NomadPreflightError,
    NomadTlsError,
    NomadTlsMismatch,
    NomadTokenMissing,
    NomadUnknownNamespace,
    NomadUnknownNodePool,
    NomadUnreachable,
)

REQUEST = "POST /v1/jobs"
TOKEN = "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN)"
NAMESPACE_SETTING = "METAFLOW_NOMAD_NAMESPACE (or NOMAD_NAMESPACE)"
OWN_TOKEN = {"Name": "team-b-read", "Policies": ["team-b-read"]}


def _answer(status: int, text: str) -> HttpError:
    return HttpError(Response(status, {"Content-Type": "text/plain"}, text.encode()))


class TokenLookup:
    """``/v1/acl/token/self`` as the client makes it: an answer, or a raised failure."""

    def __init__(self, outcome: dict | Exception = OWN_TOKEN):
        self.outcome = outcome
        self.calls = 0

    def __call__(self) -> dict:
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def _classify(failure, settings=None, namespace=None, lookup=None):
    return classify_failure(
        settings or ConnectionSettings(), REQUEST, failure, namespace, lookup or TokenLookup()
    )


# (case, status, Nomad's answer, class, detail, retried)
ANSWERS = [
    (
        "https-cluster",
        400,
        "Client sent an HTTP request to an HTTPS server.\n",
        NomadTlsMismatch,
        "Client sent an HTTP request to an HTTPS server.. The cluster serves HTTPS: set "
        "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR) to https://...",
        False,
    ),
    ("unknown-job", 404, "job not found", NomadNotFound, "job not found", False),
    (
        # Nomad 1.6 answers 404; a 500 says the same, and is retried like any 500.
        "task-not-started",
        500,
        'task "step" not started yet. No logs available',
        NomadNotFound,
        'task "step" not started yet. No logs available',
        True,
    ),
    ("acl-disabled", 400, "ACL support disabled", NomadAclDisabled, "ACL support disabled", False),
    (
        "unparsable-hcl",
        400,
        "Failed to parse job: input.hcl:3,5-6: Unsupported argument; An argument named "
        '"x" is not expected here.',
        NomadBadRequest,
        "Failed to parse job: input.hcl:3,5-6: Unsupported argument; An argument named "
        '"x" is not expected here.',
        False,
    ),
    (
        "nonexistent-namespace",
        500,
        'job "j" is in nonexistent namespace "nope"',
        NomadUnknownNamespace,
        'job "j" is in nonexistent namespace "nope". Create the namespace, or choose another '
        f"with {NAMESPACE_SETTING} or @nomad(nomad_namespace=...).",
        False,
    ),
    (
        "nonexistent-node-pool",
        500,
        '1 error occurred:\n\t* job "j" is in nonexistent node pool "gpu"\n\n',
        NomadUnknownNodePool,
        'job "j" is in nonexistent node pool "gpu". Create the node pool (`nomad node pool '
        "apply`), or choose another with METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...).",
        False,
    ),
    (
        "unknown-region",
        500,
        "No path to region",
        NomadClientError,
        "No path to region. Check METAFLOW_NOMAD_REGION (or NOMAD_REGION).",
        False,
    ),
    (
        "validation-failed",
        500,
        "1 error occurred:\n\t* Task group g validation failed\n",
        NomadClientError,
        "Task group g validation failed",
        False,
    ),
    ("no-leader", 503, "No cluster leader", NomadClientError, "No cluster leader", True),
    ("empty-answer", 502, "", NomadClientError, "HTTP 502", True),
]


@pytest.mark.parametrize(
    "status, text, kind, detail, retried", [a[1:] for a in ANSWERS], ids=[a[0] for a in ANSWERS]
)
def test_each_answer_becomes_its_class_with_the_fix_and_the_retry_policy(
    status, text, kind, detail, retried
):
    lookup = TokenLookup()
    error, transient = _classify(_answer(status, text), lookup=lookup)
    assert type(error) is kind
    assert (error.detail, error.request, error.status) == (detail, REQUEST, status)
    assert error.message == f"{REQUEST} returned HTTP {status}: {detail}"
    assert transient is retried
    assert lookup.calls == 0


def test_a_parse_failure_keeps_nomads_diagnostics_without_its_preamble():
    error, _ = _classify(_answer(400, "Failed to parse job: input.hcl:3,5-6: Unsupported"))
    assert error.reason == "input.hcl:3,5-6: Unsupported"
    other, _ = _classify(_answer(400, "Job spec is empty"))
    assert other.reason == "Job spec is empty"


def test_a_missing_node_pool_is_named_as_data():
    error, _ = _classify(_answer(500, 'job "j" is in nonexistent node pool "gpu-a100"'))
    assert error.node_pool == "gpu-a100"


def test_a_denial_without_a_token_says_to_set_one_and_looks_nothing_up():
    lookup = TokenLookup()
    error, transient = _classify(_answer(403, "Permission denied"), namespace="ns", lookup=lookup)
    assert type(error) is NomadTokenMissing and transient is False
    explanation = (
        f"No ACL token is set and this cluster enforces ACLs: set {TOKEN} to the Secret ID "
        "of a token allowed to submit jobs in namespace 'ns'."
    )
    assert error.explanation == explanation
    assert str(error) == f"{REQUEST} returned HTTP 403: Permission denied. {explanation}"
    assert lookup.calls == 0


def test_a_denial_with_a_token_names_the_token_its_policies_and_the_namespace():
    lookup = TokenLookup()
    settings = ConnectionSettings(token="t0k3n-value", namespace="team-b")
    error, _ = _classify(_answer(403, "Permission denied"), settings, lookup=lookup)
    assert type(error) is NomadForbidden
    assert error.explanation == (
        f"The ACL token in {TOKEN} (name 'team-b-read', policies: team-b-read) is not "
        "allowed to do this in namespace 'team-b'. Use a token whose policy covers that "
        f"namespace, or choose a namespace it covers with {NAMESPACE_SETTING} or "
        "@nomad(nomad_namespace=...)."
    )
    assert error.detail == f"Permission denied. {error.explanation}"
    assert lookup.calls == 1
    assert "t0k3n-value" not in str(error)


@pytest.mark.parametrize(
    "lookup_failure, explanation",
    [
        (
            _answer(403, "ACL token not found"),
            f"Nomad does not know the ACL token in {TOKEN}: it is wrong, expired or was "
            "deleted. Set it to the Secret ID of a valid token.",
        ),
        (
            _answer(500, "rpc error: oops"),
            f"Check {TOKEN} (looking the token up failed: rpc error: oops).",
        ),
        (
            NoAnswer("the request timed out: timed out"),
            f"Check {TOKEN} (looking the token up failed: the request timed out: timed out).",
        ),
    ],
    ids=["unknown-token", "lookup-refused", "lookup-unanswered"],
)
def test_a_denial_whose_token_lookup_fails_says_why(lookup_failure, explanation):
    settings = ConnectionSettings(token="t0k3n-value")
    error, _ = _classify(
        _answer(403, "Permission denied"), settings, lookup=TokenLookup(lookup_failure)
    )
    assert type(error) is NomadForbidden
    assert error.explanation == explanation


def test_a_token_the_cluster_knows_and_the_answering_server_not_yet_is_retried():
    """A server that has just (re)started answers "ACL token not found" for a few
    seconds, until it has applied the raft log; the lookup, which it forwards to the
    leader, finds the token: the denial is the server's lag, not the token's fault."""
    settings = ConnectionSettings(address="https://10.0.0.7:4646", token="t0k3n-value")
    lookup = TokenLookup({"Name": "Bootstrap Token", "Policies": []})
    error, transient = _classify(_answer(403, "ACL token not found"), settings, lookup=lookup)
    assert type(error) is NomadForbidden and transient is True
    assert error.explanation == (
        f"The cluster knows the ACL token in {TOKEN}, but the server at "
        "https://10.0.0.7:4646 does not yet: it has just (re)started and is catching up "
        "with the cluster's state."
    )
    assert lookup.calls == 1 and "t0k3n-value" not in str(error)


def test_a_token_nobody_knows_is_not_retried():
    settings = ConnectionSettings(token="t0k3n-value")
    lookup = TokenLookup(_answer(403, "ACL token not found"))
    error, transient = _classify(_answer(403, "ACL token not found"), settings, lookup=lookup)
    assert type(error) is NomadForbidden and transient is False
    assert error.explanation.startswith(f"Nomad does not know the ACL token in {TOKEN}")
    # A known token without the right: denied, as before, and not retried either.
    error, transient = _classify(_answer(403, "Permission denied"), settings)
    assert transient is False and "is not allowed to do this" in error.explanation


def test_a_denied_workload_identity_points_at_the_runner_policy():
    settings = ConnectionSettings(address="unix:///secrets/api.sock")
    error, _ = _classify(_answer(403, "Permission denied"), settings, namespace="flows")
    assert type(error) is NomadForbidden
    assert error.explanation.startswith(
        "This task's workload identity is not allowed to do this in namespace 'flows'. "
        "A deployed flow's runner needs its ACL policy bound to its runner job"
    )


def test_no_answer_is_unreachable_and_retried_and_names_the_address_and_its_source():
    failure = NoAnswer("Connection failed: [Errno 111] Connection refused")
    error, transient = _classify(failure)
    assert type(error) is NomadUnreachable and transient is True
    detail = (
        "cannot reach Nomad at http://127.0.0.1:4646 (from the built-in default): connection "
        "refused. Is the agent running there? To use another cluster, set "
        "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR)."
    )
    assert (error.detail, error.status) == (detail, None)
    assert str(error) == f"{REQUEST}: {detail}"
    alone = error.without_request()
    assert type(alone) is NomadUnreachable and alone.request is None
    assert str(alone) == "C" + detail[1:]
    assert str(error) == f"{REQUEST}: {detail}"


def test_https_to_a_plain_http_server_is_a_scheme_mismatch_and_not_retried():
    settings = ConnectionSettings(address="https://127.0.0.1:4646")
    failure = NoAnswer(
        "SSLError: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", tls=True
    )
    error, transient = _classify(failure, settings)
    assert type(error) is NomadTlsMismatch and transient is False
    assert str(error) == (
        f"{REQUEST}: https://127.0.0.1:4646 does not speak TLS; use http:// in "
        "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR) or enable TLS on the cluster."
    )


def test_an_unverifiable_certificate_is_a_tls_error_that_names_the_ca_setting():
    settings = ConnectionSettings(address="https://127.0.0.1:4646")
    failure = NoAnswer(
        "SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get "
        "local issuer certificate (_ssl.c:1006)",
        tls=True,
    )
    error, transient = _classify(failure, settings)
    assert type(error) is NomadTlsError and transient is False
    assert error.detail == (
        "the server's certificate cannot be verified with the system's trusted CAs: set "
        "METAFLOW_NOMAD_CACERT (or NOMAD_CACERT) to the cluster's CA certificate."
    )


def test_an_error_without_a_request_is_told_as_given():
    said = "token: the one in METAFLOW_NOMAD_TOKEN is unknown"
    assert str(NomadClientError(said)) == said
    assert str(NomadPreflightError(said)) == said


def test_an_error_of_a_subclass_told_alone_keeps_its_data():
    error, _ = _classify(_answer(500, 'job "j" is in nonexistent node pool "gpu"'))
    alone = error.without_request()
    assert type(alone) is NomadUnknownNodePool and alone.node_pool == "gpu"
    assert str(alone).startswith('Job "j" is in nonexistent node pool "gpu". Create the node pool')


def test_a_parse_rejection_carries_the_line_and_what_nomad_said():
    from metaflow_nomad.api.diagnosis import parse_rejection

    reason = 'input.hcl:12,7-24: Unsupported argument; An argument named "x" is not expected here.'
    error = parse_rejection(reason)
    assert (error.line, error.said) == (
        12,
        'Unsupported argument; An argument named "x" is not expected here.',
    )
    assert str(error) == reason
    assert parse_rejection("something else").line is None
