"""The ACL policy a deployed runner needs, bound to its runner jobs.

The runner authenticates with its workload identity through the Task API.  On a
cluster with ACLs, Nomad grants that identity the policies bound to its job
(``nomad acl policy apply -namespace NS -job JOB``); for dispatched and periodic
runs the job is the parent runner job.  The runner needs exactly what running
its steps takes, in its namespace: dispatch the deployment's step jobs, read
them (evaluations, allocations), list them (the no-orphans checks), stop them
(``submit-job`` is Nomad's capability for stopping a job; a workload identity
cannot register one in Nomad 1.6) and read their logs (a failed task's last lines).
"""

from __future__ import annotations

import re

from metaflow_nomad.deploy.naming import schedule_job_id

CAPABILITIES = ("dispatch-job", "submit-job", "read-job", "list-jobs", "read-logs")


def runner_policy(namespace: str) -> str:
    caps = ", ".join(f'"{c}"' for c in CAPABILITIES)
    return f'namespace "{namespace}" {{\n  capabilities = [{caps}]\n}}\n'


def policy_name(job_id: str) -> str:
    """ACL policy names allow only letters, digits and '-'."""
    return "metaflow-runner-" + re.sub(r"[^A-Za-z0-9-]", "-", job_id)[:100]


def bind_commands(deployment: str, namespace: str, scheduled: bool) -> list[str]:
    """The ``nomad acl policy apply`` command for each runner job (a management token runs it)."""
    jobs = [deployment] + ([schedule_job_id(deployment)] if scheduled else [])
    return [
        f"nomad acl policy apply -namespace {namespace} -job {job} {policy_name(job)} "
        "runner-policy.hcl"
        for job in jobs
    ]
