"""How a task gets its code package: Metaflow's own commands with its one-minute
download loop replaced, and scripts that bash accepts.  Real Metaflow commands, real
bash (``bash -n``) and real botocore errors; the download itself runs against S3 in
tests/integration/test_package_fetch.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from metaflow.metaflow_environment import MetaflowEnvironment

from metaflow_nomad.model import JobIdentity
from metaflow_nomad.render import s3_fetch
from metaflow_nomad.render.bootstrap import TaskScript, build_task_launch
from metaflow_nomad.render.code_package import S3_FETCH_FUNCTION, code_package_setup

PACKAGE = {
    "url": "s3://bucket/prefix/Flow/data/ab/abcdef",
    "sha": "abcdef",
    "metadata": json.dumps({"version": 0, "archive_format": "tgz", "mfcontent_version": 1}),
}
IDENTITY = JobIdentity("Flow", "7", "train", "3", 0, "me")


@pytest.fixture()
def environment():
    return MetaflowEnvironment(None)


def test_s3_download_loop_is_replaced_by_the_classifying_fetch(environment):
    original = environment.get_package_commands(PACKAGE["url"], "s3", PACKAGE["metadata"])
    assert any(c.startswith("i=0; while") for c in original)  # what is being replaced
    setup = code_package_setup(environment, PACKAGE, "s3")
    joined = "\n".join(setup.commands)
    assert "while [ $i -le 5 ]" not in joined and "sleep 10" not in joined
    assert f"{S3_FETCH_FUNCTION} {PACKAGE['url']} job.tar" in joined
    assert setup.definitions.startswith(f'{S3_FETCH_FUNCTION}(){{ python - "$@" <<\'')
    assert "def classify(exc, endpoint):" in setup.definitions


@pytest.mark.parametrize("datastore", ["s3", "local"])
def test_the_bootstrap_script_is_valid_bash(environment, datastore, tmp_path):
    package = dict(PACKAGE, url=PACKAGE["url"] if datastore == "s3" else "/shared/pkg.tgz")
    task = TaskScript(IDENTITY, "python -u flow.py step train", package, datastore, "/root")
    launch = build_task_launch(environment, task)
    script = tmp_path / "bootstrap.sh"
    script.write_text(launch.script)
    checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_shared_filesystem_package_missing_on_the_node_is_said_in_one_line(environment):
    package = dict(PACKAGE, url="/not/shared/pkg.tgz")
    joined = " ".join(code_package_setup(environment, package, "local").commands)
    assert (
        "metaflow-nomad: the code package could not be fetched from /not/shared/pkg.tgz: it is "
        "not on this node."
    ) in joined


@pytest.mark.parametrize(
    ("error", "retry", "reason"),
    [
        (NoCredentialsError(), False, "the task has no AWS credentials"),
        (ClientError({"Error": {"Code": "403"}}, "HeadObject"), False, "access denied (403)"),
        (ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadObject"), False, "not found"),
        (ClientError({"Error": {"Code": "SlowDown"}}, "HeadObject"), True, "S3 answered"),
        (EndpointConnectionError(endpoint_url="http://s3:9000"), True, "Could not connect"),
    ],
)
def test_download_errors_that_retrying_cannot_fix_are_not_retried(error, retry, reason):
    retried, said, _ = s3_fetch.classify(error, "http://s3:9000")
    assert retried is retry
    assert said.startswith(reason)


def _package_in_cache(tmp_path):
    entry = tmp_path / "cache" / PACKAGE["sha"]
    (entry / ".mf_code" / "metaflow").mkdir(parents=True)
    (entry / ".mf_code" / "metaflow" / "__init__.py").write_text("")
    (entry / ".mf_meta").mkdir()
    (entry / ".mf_meta" / "uv.lock").write_text("lock")
    (entry / "flow.py").write_text("")
    return entry


def _enter_package(setup, task_dir, cache, *then: str) -> None:
    task_dir.mkdir()
    ran = subprocess.run(
        ["bash", "-c", " && ".join([*setup.commands, *then])],
        cwd=task_dir,
        env={"PATH": "/usr/bin:/bin", "METAFLOW_NOMAD_PACKAGE_CACHE": str(cache)},
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr


def test_without_an_environment_bootstrap_mf_code_is_one_link(environment, tmp_path):
    """The fast path: a directory of links instead made the docker suite's foreach
    with @retry take 90 s instead of 39 s."""
    entry = _package_in_cache(tmp_path)
    _enter_package(code_package_setup(environment, PACKAGE, "s3"), tmp_path / "t", entry.parent)
    linked = tmp_path / "t" / "metaflow" / ".mf_code"
    assert linked.is_symlink() and linked.resolve() == entry / ".mf_code"


def test_a_task_moving_the_packages_other_files_leaves_the_node_cache_whole(
    environment, tmp_path, monkeypatch
):
    """Metaflow finds a package's other files at ``.mf_code/..``; the uv bootstrap moves
    uv.lock from there.  With ``.mf_code`` a link, that was the node's cache entry, and
    every later task of the flow on the node failed ("Could not find uv.lock")."""
    monkeypatch.setattr(environment, "TYPE", "uv", raising=False)
    entry = _package_in_cache(tmp_path)
    setup = code_package_setup(environment, PACKAGE, "s3")
    moved = "mv .mf_code/../.mf_meta/uv.lock uv.lock && test -f uv.lock"  # as Metaflow finds it
    for task in ("task1", "task2"):  # two tasks of one flow on one node
        _enter_package(setup, tmp_path / task, entry.parent, moved)
        assert (entry / ".mf_meta" / "uv.lock").read_text() == "lock"
        linked = tmp_path / task / "metaflow" / ".mf_code" / "metaflow"
        assert linked.is_symlink() and linked.resolve() == entry / ".mf_code" / "metaflow"
