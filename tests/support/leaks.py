"""Where a secret could end up once a flow ran on Nomad, and where one did.

A job is read back whole from the API: its JSON and ``Meta``, every version, the
HCL it was registered with, its tasks' logs, and the base64 payloads it carries
decoded (a task's script and exact env in ``env``; a deployed task's script, with
the task's environment, in its dispatch meta ``mf_command``): a secret encoded
there is as readable as one in plain text.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
from collections.abc import Mapping
from pathlib import Path

from metaflow_nomad.deploy.step_jobs import COMMAND_META


def _decoded(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None  # a runtime reference such as ${NOMAD_META_mf_command}


def decoded_payloads(job: dict) -> dict[str, str]:
    """The job's base64 values, decoded, by where they are."""
    encoded = {f"Meta {COMMAND_META}": (job.get("Meta") or {}).get(COMMAND_META) or ""}
    for group in job.get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            for name, value in (task.get("Env") or {}).items():
                if name.endswith("_B64"):
                    encoded[f"task {task['Name']} env {name}"] = value
    decoded = {where: _decoded(value) for where, value in encoded.items() if value}
    return {where: text for where, text in decoded.items() if text is not None}


def job_places(agent, job_id: str, task: str | None, namespace: str = "default") -> dict:
    """Everything Nomad keeps of one job, by where; ``task`` names the task whose
    logs to read (None for a parameterized parent, which runs nothing itself)."""
    quoted = job_id.replace("/", "%2F")
    ns = f"namespace={namespace}"
    job = agent.api("GET", f"/v1/job/{quoted}?{ns}")
    places = {f"job {job_id}": json.dumps(job)}
    places.update({f"job {job_id} {k}": v for k, v in decoded_payloads(job).items()})
    versions = agent.api("GET", f"/v1/job/{quoted}/versions?{ns}")
    places[f"versions {job_id}"] = json.dumps(versions)
    try:
        submission = agent.api("GET", f"/v1/job/{quoted}/submission?version=0&{ns}")
        places[f"submission {job_id}"] = json.dumps(submission)
    except urllib.error.HTTPError as exc:
        if exc.code != 404:  # a dispatched child has no HCL of its own
            raise
    if task is None:
        return places
    for alloc in agent.api("GET", f"/v1/job/{quoted}/allocations?{ns}"):
        for stream in ("stdout", "stderr"):
            places[f"log {job_id} {alloc['ID'][:8]} {stream}"] = agent.api_text(
                f"/v1/client/fs/logs/{alloc['ID']}?task={task}&type={stream}&plain=true&{ns}"
            )
    return places


def file_places(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (the run's ``.metaflow``, the Metaflow home)."""
    return {
        f"file {path}": path.read_bytes().decode("latin-1")
        for root in roots
        if root.exists()
        for path in root.rglob("*")
        if path.is_file()
    }


def secret_locations(secrets: Mapping[str, str], places: Mapping[str, str]) -> list[str]:
    """``<what> in <where>`` for every secret found (the values are never shown)."""
    return [
        f"{what} in {where}"
        for what, value in secrets.items()
        for where, text in places.items()
        if value in text
    ]
