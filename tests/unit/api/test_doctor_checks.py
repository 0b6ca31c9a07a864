"""doctor's pure checks on recorded Nomad answers: which nodes count, which drivers
and devices they have, what a failing line tells the user to change, and that the
settings listing never shows a secret.  The same checks run against real agents in
tests/integration/test_doctor.py."""

from __future__ import annotations

from metaflow_nomad.api.client import NomadClient
from metaflow_nomad.api.connection import ConnectionSettings
from metaflow_nomad.api.diagnosis import classify_failure, one_line
from metaflow_nomad.api.doctor import (
    FAIL,
    INFO,
    OK,
    SKIP,
    WARN,
    Check,
    _denial,
    check_connection,
    check_token,
    settings_report,
)
from metaflow_nomad.api.placement import (
    check_devices,
    check_docker_volumes,
    check_driver,
    check_node_pool,
    check_nodes,
    node_lines,
    package_cache_hint,
    requested_bind_mounts,
    requested_devices,
)
from metaflow_nomad.api.transport import HttpError, Response
from metaflow_nomad.errors import NomadClientError
from metaflow_nomad.plugin.doctor_report import Report


def node(name, dc="dc1", pool="default", status="ready", eligible=True, drivers=None, devices=None):
    return {
        "Name": name,
        "Datacenter": dc,
        "NodePool": pool,
        "Status": status,
        "SchedulingEligibility": "eligible" if eligible else "ineligible",
        "Drain": False,
        "Drivers": drivers or {"raw_exec": {"Detected": True, "Healthy": True}},
        "NodeResources": {"Devices": devices},
    }


def test_nodes_are_matched_by_datacenter_pattern_pool_and_state():
    nodes = [
        node("a", dc="east-1"),
        node("b", dc="east-2", status="down"),
        node("c", dc="west-1"),
        node("d", dc="east-3", pool="gpu"),
    ]
    check, eligible = check_nodes(nodes, ("east-*",), None)
    assert check == Check(
        OK, "nodes", "1 ready and eligible in datacenters ['east-*'], node pool 'default': a"
    )
    assert [n["Name"] for n in eligible] == ["a"]
    _, in_all = check_nodes(nodes, ("*",), "all")
    assert sorted(n["Name"] for n in in_all) == ["a", "c", "d"]


def test_no_node_in_the_datacenters_names_those_the_cluster_has():
    check, eligible = check_nodes([node("a", dc="dc2"), node("b", dc="dc1")], ("nope",), None)
    assert eligible == []
    assert check.status == FAIL
    assert check.detail == (
        "no client node in datacenters ['nope'], node pool 'default' (the cluster's nodes are "
        "in datacenters: dc1, dc2): set them with METAFLOW_NOMAD_DEFAULT_DATACENTERS or "
        "@nomad(datacenters=...), or choose another node pool."
    )


def test_nodes_that_exist_but_cannot_take_work_are_named_with_their_state():
    check, _ = check_nodes([node("a", status="down"), node("b", eligible=False)], ("*",), None)
    assert check.detail == (
        "no ready, eligible node in datacenters ['*'], node pool 'default' (a down/eligible, "
        "b ready/ineligible): bring one up."
    )


DRIVERS = {
    "docker": {"Detected": False, "Healthy": False, "HealthDescription": "Failed to connect"},
    "exec": {"Detected": True, "Healthy": False, "HealthDescription": "no cgroups"},
    "raw_exec": {"Detected": True, "Healthy": True},
}


def test_driver_health_per_node_and_the_fix_for_a_missing_driver():
    eligible = [node("a", drivers=DRIVERS)]
    assert node_lines(eligible) == [
        Check(
            "info",
            "node a",
            "dc1, pool default: docker not detected (Failed to connect), exec unhealthy "
            "(no cgroups), raw_exec healthy",
        )
    ]
    assert check_driver(eligible, "raw_exec") == Check(
        OK, "driver raw_exec", "healthy on 1 of 1 node(s)"
    )
    missing = check_driver(eligible, "exec")
    assert missing.status == FAIL
    assert missing.detail == (
        "no eligible node has a healthy exec driver (they have: raw_exec): enable exec on the "
        "client nodes, or choose another driver with METAFLOW_NOMAD_DRIVER or "
        "@nomad(driver=...)."
    )


def devices(vendor, kind, name, healthy, sick=0):
    instances = [{"Healthy": True}] * healthy + [{"Healthy": False}] * sick
    return {"Vendor": vendor, "Type": kind, "Name": name, "Instances": instances}


def test_devices_are_read_from_the_job_and_matched_like_nomad_does():
    job = {
        "TaskGroups": [
            {"Tasks": [{"Resources": {"Devices": [{"Name": "nvidia/gpu", "Count": 2}]}}]},
            {"Tasks": [{"Resources": {"Devices": [{"Name": "nomad/file/mock"}]}}]},
        ]
    }
    assert requested_devices(job) == [("nvidia/gpu", 2), ("nomad/file/mock", 1)]
    eligible = [
        node("a", devices=[devices("nvidia", "gpu", "t4", 1, sick=2)]),
        node("b", devices=[devices("nomad", "file", "mock", 2)]),
    ]
    assert check_devices(eligible, "nvidia/gpu", 1).status == OK
    assert check_devices(eligible, "gpu", 1).status == OK
    assert check_devices(eligible, "nomad/file/mock", 2) == Check(
        OK, "device nomad/file/mock x 2", "a node has 2 healthy"
    )
    two = check_devices(eligible, "nvidia/gpu", 2)
    assert two.status == FAIL
    assert two.detail == (
        "no eligible node has 2 healthy nvidia/gpu instance(s) (found: nomad/file/mock, "
        "nvidia/gpu/t4): lower `gpu`, set `gpu_vendor`, or add nodes with the device and "
        "its plugin."
    )
    assert check_devices(eligible, "amd/gpu", 1).status == FAIL


def test_settings_report_shows_sources_and_never_a_secret(tmp_path):
    environ = {
        "METAFLOW_HOME": str(tmp_path),
        "NOMAD_ADDR": "https://nomad.example:4646",
        "NOMAD_TOKEN": "s3cr3t-token-value",
        "METAFLOW_NOMAD_DRIVER": "exec",
    }
    lines = settings_report(environ)
    assert (
        "  METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR): https://nomad.example:4646 (from NOMAD_ADDR)"
        in lines
    )
    assert "  METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN): set (from NOMAD_TOKEN)" in lines
    assert "  METAFLOW_NOMAD_DRIVER: exec (from METAFLOW_NOMAD_DRIVER)" in lines
    assert "  METAFLOW_NOMAD_MEMORY: not set; default 4096" in lines
    assert not [line for line in lines if "s3cr3t" in line]


def _probe_failed(status: int, answer: str, token: str | None = None) -> NomadClientError:
    """The error a capability probe raises for Nomad's ``answer`` (the client's own path)."""
    own = {"Name": "reader", "Policies": ["read"]}
    settings = ConnectionSettings(token=token)
    failure = HttpError(Response(status, {}, answer.encode()))
    return classify_failure(settings, "POST /v1/job/j/plan", failure, "ns", lambda: own)[0]


def test_a_nonexistent_node_pool_or_namespace_is_told_as_such():
    pool = _probe_failed(
        500, '1 error occurred:\n\t* job "mf-doctor-1" is in nonexistent node pool "gpu"\n'
    )
    assert _denial(pool, "submit-job", "default") == (
        "node pool 'gpu' does not exist: create it (`nomad node pool apply`) or choose another "
        "with METAFLOW_NOMAD_NODE_POOL or @nomad(node_pool=...)."
    )
    namespace = _probe_failed(500, 'job "j" is in nonexistent namespace "ns"')
    assert _denial(namespace, "submit-job", "ns").startswith(
        "the namespace does not exist: create it (`nomad namespace apply ns`)"
    )
    assert one_line("2 errors occurred:\n\t* a\n\t* b\n") == "a b"


def test_a_denied_probe_names_the_missing_token_or_the_capability_the_token_lacks():
    assert _denial(_probe_failed(403, "Permission denied"), "submit-job", "ns") == (
        "denied: no ACL token is set and this cluster enforces ACLs: set METAFLOW_NOMAD_TOKEN "
        "(or NOMAD_TOKEN) to the Secret ID of a token allowed to submit jobs in namespace 'ns'."
    )
    lacking = _probe_failed(403, "Permission denied", token="t0k3n")
    assert _denial(lacking, "submit-job", "ns") == (
        "denied: the token needs the `submit-job` capability here. The ACL token in "
        "METAFLOW_NOMAD_TOKEN (or NOMAD_TOKEN) (name 'reader', policies: read) is not allowed "
        "to do this in namespace 'ns'. Use a token whose policy covers that namespace, or "
        "choose a namespace it covers with METAFLOW_NOMAD_NAMESPACE (or NOMAD_NAMESPACE) or "
        "@nomad(nomad_namespace=...)."
    )
    assert _denial(_probe_failed(400, "1 error occurred:\n\t* bad\n"), "parse-job", "ns") == "bad"


class Refusing:
    """A transport that answers every request with one error status and text."""

    def __init__(self, status: int, text: str):
        self.status, self.text = status, text

    def request(self, method, endpoint, params=None, json=None, timeout=None):
        raise HttpError(Response(self.status, {}, self.text.encode()))


def _refusing_client(status: int, text: str, token: str | None = None) -> NomadClient:
    return NomadClient(ConnectionSettings(token=token), transport=Refusing(status, text))


def test_an_http_address_for_an_https_cluster_is_a_tls_failure_of_an_answering_address():
    checks = check_connection(
        _refusing_client(400, "Client sent an HTTP request to an HTTPS server.\n")
    )
    assert checks == [
        Check(OK, "address", "http://127.0.0.1:4646 (from the built-in default) answers"),
        Check(
            FAIL,
            "TLS",
            "Client sent an HTTP request to an HTTPS server.. The cluster serves HTTPS: set "
            "METAFLOW_NOMAD_ADDRESS (or NOMAD_ADDR) to https://...",
        ),
    ]
    other = check_connection(_refusing_client(400, "Bad Request"))
    assert [c.status for c in other] == [FAIL, SKIP]
    assert "answered, but not as a Nomad agent does (Bad Request)" in other[0].detail


def test_the_token_line_for_a_cluster_without_acls_and_for_an_unknown_token():
    disabled = check_token(_refusing_client(400, "ACL support disabled", token="t"))
    assert disabled == Check(
        OK,
        "token",
        "ACLs are disabled on this cluster: none needed (the one in METAFLOW_NOMAD_TOKEN "
        "(or NOMAD_TOKEN) is ignored)",
    )
    unknown = check_token(_refusing_client(403, "ACL token not found", token="t"))
    assert unknown.status == FAIL
    assert unknown.detail.startswith("Nomad does not know the ACL token in METAFLOW_NOMAD_TOKEN")
    broken = check_token(_refusing_client(400, "bad request", token="t"))
    assert broken == Check(FAIL, "token", "looking it up failed: bad request")


def test_a_node_pool_the_token_may_not_read_is_a_warning_and_a_missing_one_fails():
    assert check_node_pool(_refusing_client(403, "Permission denied", token="t"), "gpu") == Check(
        WARN, "node pool", "'gpu' cannot be read with this token"
    )
    assert check_node_pool(_refusing_client(404, "not found"), "gpu").status == FAIL


def test_the_verdict_counts_failures_with_where_they_are():
    said = []
    report = Report(said.append)
    report.add(Check(OK, "address", "fine"), Check("warn", "nodes", "hidden"))
    report.section("Step 'train':", scope="step 'train'")
    report.add(Check(FAIL, "driver docker", "missing"), Check("skip", "placement", "later"))
    assert report.verdict() is False
    assert said[-1] == (
        "Verdict: 1 of 3 checks FAILED (driver docker (step 'train')) (1 warning(s)). "
        "Each FAIL line says what to change."
    )
    ok = Report(said.append)
    ok.add(Check(OK, "address", "fine"))
    assert ok.verdict() is True
    assert said[-1] == "Verdict: all 1 checks passed."


def _docker_node(name, volumes):
    attributes = {"driver.docker.volumes.enabled": "true"} if volumes else {}
    return node(name, drivers={"docker": {"Healthy": True, "Attributes": attributes}})


def test_bind_mounts_are_read_from_the_docker_tasks_of_the_job():
    job = {
        "TaskGroups": [
            {
                "Tasks": [
                    {"Driver": "docker", "Config": {"volumes": ["/cache:/cache", "/d:/in:ro"]}},
                    {"Driver": "raw_exec", "Config": {"volumes": ["/ignored:/x"]}},
                    {"Driver": "docker", "Config": {"image": "python:3.11"}},
                ]
            }
        ]
    }
    assert requested_bind_mounts(job) == ["/cache", "/d"]


def test_mounts_fail_where_no_docker_plugin_allows_volumes_and_say_how_to_allow_them():
    line = check_docker_volumes([_docker_node("a", False)], ["/cache"])
    assert line.status == FAIL
    assert "bind-mounts /cache" in line.detail
    assert "volumes { enabled = true }" in line.detail
    assert "METAFLOW_NOMAD_PACKAGE_CACHE" in line.detail


def test_mounts_warn_when_some_nodes_refuse_them_and_name_those_nodes():
    nodes = [_docker_node("a", True), _docker_node("b", False), _docker_node("c", False)]
    line = check_docker_volumes(nodes, ["/cache"])
    assert line.status == WARN
    assert "b, c refuse(s)" in line.detail
    assert "1 of 3" in line.detail


def test_mounts_pass_where_allowed_and_only_docker_nodes_count():
    nodes = [_docker_node("a", True), node("raw")]
    line = check_docker_volumes(nodes, ["/cache"])
    assert (line.status, line.detail) == (OK, "the step bind-mounts /cache; allowed on 1 node(s)")
    assert check_docker_volumes(nodes, []) is None
    assert check_docker_volumes([node("raw")], ["/cache"]) is None


def test_the_package_cache_hint_is_for_nodes_that_allow_volumes_and_steps_without_one():
    hint = package_cache_hint([_docker_node("a", True)], None)
    assert hint.status == INFO
    assert hint.name == "package cache"
    assert "METAFLOW_NOMAD_PACKAGE_CACHE" in hint.detail
    assert package_cache_hint([_docker_node("a", True)], "/cache") is None
    assert package_cache_hint([_docker_node("a", False)], None) is None
    assert package_cache_hint([node("raw")], None) is None
