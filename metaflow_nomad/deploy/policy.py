"""The ACL policy a deployed runner needs, bound to its runner jobs.

The runner authenticates with its workload identity through the Task API.  On a
cluster with ACLs, Nomad grants that identity the policies bound to its job
(``nomad acl policy apply -namespace NS -job JOB``); for dispatched and periodic
runs the job is the parent runner job.  The runner needs exactly what running
its steps takes, in its namespace: dispatch the deployment's step jobs, read
them (evaluations, allocations), list them (the no-orphans checks), stop them
(``submit-job`` is Nomad's capability for stopping a job; a workload identity
cannot register one in Nomad 1.6) and read their logs (a failed task's last lines).

A run that succeeds publishes its flow's finish event, which starts the deployments
waiting on it (``@trigger_on_finish``): finding them takes the same ``list-jobs`` and
``read-job``, starting them ``dispatch-job``, and a deployment waiting on several
events keeps those that arrived in a Variable under ``metaflow/triggers/``.
"""

from __future__ import annotations

import re

from metaflow_nomad.deploy.naming import schedule_job_id
from metaflow_nomad.deploy.triggers import PENDING_PREFIX

CAPABILITIES = ("dispatch-job", "submit-job", "read-job", "list-jobs", "read-logs")
PENDING_EVENTS_PATH = PENDING_PREFIX + "*"
VARIABLE_CAPABILITIES = ("read", "write", "destroy", "list")


# What publishing an event takes: find the deployments waiting on it, start them.
PUBLISHER_CAPABILITIES = ("list-jobs", "read-job", "dispatch-job")


def runner_policy(namespace: str) -> str:
    return namespace_policy(namespace, CAPABILITIES)


def publisher_policy(namespace: str) -> str:
    """What a token that publishes events (``NomadEvent``, ``event publish``) needs."""
    return namespace_policy(namespace, PUBLISHER_CAPABILITIES)


def namespace_policy(namespace: str, capabilities: tuple[str, ...]) -> str:
    caps = ", ".join(f'"{c}"' for c in capabilities)
    return f'namespace "{namespace}" {{\n  capabilities = [{caps}]\n{pending_events_rule()}}}\n'


def pending_events_rule() -> str:
    """The rule over the Variables in which deployments keep the events they wait on."""
    variable_caps = ", ".join(f'"{c}"' for c in VARIABLE_CAPABILITIES)
    return (
        f'  variables {{\n    path "{PENDING_EVENTS_PATH}" {{\n'
        f"      capabilities = [{variable_caps}]\n    }}\n  }}\n"
    )


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
