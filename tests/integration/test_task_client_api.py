"""Issue 10: inside a Nomad task the client API, tags and cards behave as they do
locally, and ``resume`` of a run whose steps ran on Nomad works, foreach included.

Both supported configurations run the same user flow (tests/flows/client_api_flow.py):
the local datastore on a shared filesystem, and S3 (moto) with local metadata.
Everything is checked from outside: the Metaflow client, ``card get``/``card list``,
``logs``, the Nomad API and the allocations' directories.
"""

from __future__ import annotations

import base64
import os
import re

import pytest

from metaflow_nomad.api.lookup import find_jobs
from tests.support.flows import read_run
from tests.support.s3 import S3_TEMPLATES

pytestmark = pytest.mark.integration

FLOW = "client_api_flow.py"
FLOW_NAME = "ClientApiFlow"


@pytest.fixture(params=["shared-filesystem", "s3"])
def datastore_env(request) -> dict:
    """The run's settings for each configuration (the default is the shared filesystem)."""
    if request.param == "shared-filesystem":
        return {}
    s3_server = request.getfixturevalue("s3_server")
    request.getfixturevalue("credentials_in_nomad_variables")
    return {
        **s3_server.metaflow_env(f"client-api-{os.getpid()}"),
        "METAFLOW_NOMAD_TEMPLATES_DIR": str(S3_TEMPLATES),
    }


def only(tasks: list[dict]) -> dict:
    [task] = tasks
    return task


def shown(html: str) -> str:
    """What a card shows: its page carries the components as base64 JSON (``__MF_DATA__``)."""
    encoded = re.findall(r'__MF_DATA__\["[^"]+"\] = "([^"]+)"', html)
    assert encoded, "no card data in the page"
    return "\n".join(base64.b64decode(e).decode() for e in encoded)


def card_text(run_flow, env, pathspec: str, *options: str) -> str:
    """``python flow.py card get PATHSPEC [options] FILE``: what the card shows."""
    path = run_flow.workdir / "card.html"
    path.unlink(missing_ok=True)
    result = run_flow(FLOW, "get", pathspec, *options, str(path), command="card", env=env)
    assert result.returncode == 0, result.output
    return shown(path.read_text())


def card_view_text(run_flow, env, pathspec: str, *options: str) -> str:
    """``python flow.py card view ...`` with a "browser" that prints the page's URL."""
    browser = {**env, "BROWSER": "echo %s"}
    result = run_flow(FLOW, "view", pathspec, *options, command="card", env=browser)
    assert result.returncode == 0, result.output
    [path] = re.findall(r"file://(\S+)", result.output)
    with open(path) as handle:
        return shown(handle.read())


def local_metadata_dirs(alloc_dir) -> list[str]:
    """Real ``.metaflow`` directories in an allocation (a link to the run's is fine)."""
    return [
        os.path.join(directory, name)
        for directory, subdirs, _ in os.walk(alloc_dir)
        for name in subdirs
        if name == ".metaflow" and not os.path.islink(os.path.join(directory, name))
    ]


def test_client_api_tags_and_cards_in_tasks_then_resume(
    run_flow, nomad_agent, nomad_client, datastore_env
):
    s3 = bool(datastore_env)
    broken = run_flow(FLOW, "--tag", "break-join", env=datastore_env)
    assert broken.returncode != 0
    assert "join broken on purpose" in broken.output
    origin_id = broken.run_id
    origin = read_run(broken, f"{FLOW_NAME}/{origin_id}")

    # Tags added and removed inside a task are on the run, as seen from outside.
    assert origin["tags"] == ["break-join", "from-nomad"]
    start = only(origin["steps"]["start"])
    assert start["data"]["seen_task"] == start["pathspec"]
    assert start["data"]["seen_tags"] == ["break-join", "from-nomad"]
    # Each square task read an earlier step of its run, and its own metadata.
    squares = origin["steps"]["square"]
    assert [t["data"]["items_seen"] for t in squares] == [[1, 2, 3]] * 3
    for task in squares:
        assert task["data"]["own_alloc"] == task["metadata"]["nomad-alloc-id"]
    [start_job] = [
        j
        for j in find_jobs(nomad_client, FLOW_NAME, origin_id, include_dead=True)
        if "-start-" in j["ID"]
    ]
    assert start["metadata"]["nomad-job-id"] == start_job["ID"]

    # Cards: the default and an editable one with an id on one step, blank on the others.
    start_path = start["pathspec"].split("/", 1)[1]
    assert "Notes written on Nomad" in card_text(
        run_flow, datastore_env, start_path, "--id", "notes"
    )
    assert "Notes written on Nomad" in card_view_text(
        run_flow, datastore_env, start_path, "--id", "notes"
    )
    listed = run_flow(FLOW, "list", start_path, "--as-json", command="card", env=datastore_env)
    assert listed.returncode == 0, listed.output
    assert listed.output.count('"type": "default"') == 1, listed.output
    assert listed.output.count('"type": "blank"') == 1, listed.output
    square_values = {}
    for task in squares:
        html = card_text(run_flow, datastore_env, task["pathspec"].split("/", 1)[1])
        square_values[task["data"]["value"]] = "squared is" in html
    assert square_values == {1: True, 4: True, 9: True}

    if not s3:
        # Metadata lands in the run's datastore and nowhere else.
        for job in find_jobs(nomad_client, FLOW_NAME, origin_id, include_dead=True):
            allocs, _ = nomad_client.job_allocations(job["ID"])
            for alloc in allocs:
                alloc_dir = nomad_agent.data_dir / "data" / "alloc" / alloc["ID"]
                assert alloc_dir.is_dir()
                assert local_metadata_dirs(alloc_dir) == []

    resumed = run_flow(FLOW, env=datastore_env, command="resume")
    assert resumed.returncode == 0, resumed.output
    resumed_id = resumed.run_id
    assert resumed_id != origin_id
    run = read_run(resumed, f"{FLOW_NAME}/{resumed_id}")
    assert run["successful"]
    assert run["tags"] == ["joined"]
    # Finished steps were reused: their tasks come from the origin run's Nomad jobs.
    for task in [*run["steps"]["start"], *run["steps"]["square"]]:
        assert task["metadata"]["origin-run-id"] == origin_id
        assert f"-{origin_id}-" in task["metadata"]["nomad-job-id"]
    # The join ran again, on Nomad, and looked back at the run it resumed.
    join = only(run["steps"]["join"])
    assert f"-{resumed_id}-join-" in join["metadata"]["nomad-job-id"]
    assert join["data"]["total"] == 14
    assert join["data"]["origin_tags"] == ["break-join", "from-nomad"]
    assert join["data"]["origin_values"] == [1, 4, 9]
    assert {origin_id, resumed_id} <= set(join["data"]["runs_seen"])
    join_path = join["pathspec"].split("/", 1)[1]
    assert "Total of squares: 14" in card_text(
        run_flow, datastore_env, join_path, "--id", "summary"
    )
    # The cards of reused tasks are still there through the resumed run.
    cloned = run["steps"]["square"][0]["pathspec"].split("/", 1)[1]
    assert "squared is" in card_text(run_flow, datastore_env, cloned)

    logs = run_flow(FLOW, join_path, command="logs", env=datastore_env)
    assert logs.returncode == 0, logs.output
    assert "join on nomad: total 14" in logs.output
    print(
        f"{'s3' if s3 else 'shared filesystem'}: run {origin_id} (broken join) and resume "
        f"{resumed_id}: tags {origin['tags']} / {run['tags']}, cards and client API checked"
    )
