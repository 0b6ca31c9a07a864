"""What a deployment waits on: its ``@trigger`` and ``@trigger_on_finish`` events.

A deployment's runner job carries its triggers in its Meta, so Nomad itself can
say which deployments wait on an event (a job-list filter over
``META_TRIGGER_EVENTS``) and a publisher needs no registry of its own.  A run
started by events gets them as the dispatch meta ``TRIGGERS_META``; the runner
hands them to every task as ``model.TRIGGERS_ENV``, from which ``current.trigger`` is
built, as Argo Workflows' steps build it from their event payloads.

Event names and parameter mappings follow Metaflow's Argo implementation:
``@trigger_on_finish(flow="Etl")`` waits on ``metaflow.Etl.end`` (with
``@project``: ``metaflow.<project>.<branch>.Etl.end``), and a single event
without a mapping maps every flow parameter from the payload field of the same
name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from metaflow_nomad.errors import NomadException

# Runner job Meta: the triggers (JSON), and their event names as ",a,b," for filters.
META_TRIGGERS = "metaflow.triggers"
META_TRIGGER_EVENTS = "metaflow.trigger_events"
# Dispatch meta of a run started by events: the events (JSON list).
TRIGGERS_META = "mf_triggers"
# Where deployments waiting on several events keep those that arrived (Nomad Variables).
PENDING_PREFIX = "metaflow/triggers/"

EVENT = "event"
RUN = "run"

_EVENT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PAYLOAD_KEY = re.compile(r"^[A-Za-z0-9_]+$")


class TriggerError(NomadException):
    headline = "Invalid trigger"


@dataclass(frozen=True)
class Trigger:
    """One event a deployment waits on; ``parameters`` maps a flow parameter to the
    payload field that gives its value."""

    name: str
    kind: str = EVENT
    parameters: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.kind, "parameters": dict(self.parameters)}


def finish_event_name(project_flow_name: str) -> str:
    """The event a finished run of a flow publishes (its ``@project`` name if any)."""
    return f"metaflow.{project_flow_name}.end"


def flow_triggers(
    flow, parameter_names: Sequence[str], project: Mapping[str, str]
) -> list[Trigger]:
    """The deployment's triggers, from the flow's decorators (deploy-time values
    evaluated now); ``project`` is the deploying flow's ``project_name`` and
    ``branch_name``, which a ``@trigger_on_finish`` without its own takes."""
    decorators = getattr(flow, "_flow_decorators", {})
    on_event, on_finish = decorators.get("trigger"), decorators.get("trigger_on_finish")
    if on_event and on_finish:
        raise TriggerError(
            f"{flow.name} has both @trigger and @trigger_on_finish: a deployment waits on "
            "one kind. Use @trigger with the finish event names (metaflow.<Flow>.end) instead."
        )
    if on_event:
        on_event[0].format_deploytime_value()
        return event_triggers(on_event[0].triggers, parameter_names)
    if on_finish:
        on_finish[0].format_deploytime_value()
        return [finish_trigger(spec, project) for spec in on_finish[0].triggers]
    return []


def event_triggers(specs: Sequence[Mapping], parameter_names: Sequence[str]) -> list[Trigger]:
    """``@trigger`` events, checked as Argo checks them; one event with no mapping
    maps every parameter from the payload field of the same name."""
    known = {name.lower(): name for name in parameter_names}
    triggers, mapped = [], set()
    for spec in specs:
        name = spec["name"]
        if not _EVENT_NAME.match(name):
            raise TriggerError(
                f"@trigger event name {name!r} is not valid: use letters, digits, '_', '-' "
                "and '.' only."
            )
        parameters = {}
        for parameter, payload_key in (spec.get("parameters") or {}).items():
            if parameter.lower() not in known:
                raise TriggerError(
                    f"@trigger maps event {name!r} to parameter {parameter!r}, which the "
                    f"flow does not have. Its parameters: {', '.join(parameter_names) or 'none'}."
                )
            if not _PAYLOAD_KEY.match(payload_key):
                raise TriggerError(
                    f"@trigger maps {parameter!r} to payload field {payload_key!r} of event "
                    f"{name!r}: a payload field is letters, digits and '_' only."
                )
            if parameter.lower() in mapped:
                raise TriggerError(f"@trigger maps parameter {parameter!r} twice.")
            mapped.add(parameter.lower())
            parameters[known[parameter.lower()]] = payload_key
        triggers.append(Trigger(name, EVENT, parameters))
    if len(triggers) == 1 and not triggers[0].parameters:
        triggers[0] = Trigger(triggers[0].name, EVENT, {p: p for p in parameter_names})
    return triggers


def finish_trigger(spec: Mapping, project: Mapping[str, str]) -> Trigger:
    """``@trigger_on_finish`` of one flow: its finish event, named with the upstream
    project and branch (the deploying flow's own when the trigger names none)."""
    project_name = spec.get("project") or project.get("project_name")
    branch = spec.get("branch") or project.get("branch_name")
    if bool(project_name) != bool(branch):
        raise TriggerError(
            f"@trigger_on_finish of {spec['flow']} names a project without a branch (or a "
            "branch without a project): give both, e.g. flow='project.branch.Flow', or use "
            "@project."
        )
    upstream = ".".join(part for part in (project_name, branch, spec["flow"]) if part)
    return Trigger(finish_event_name(upstream), RUN)


def triggers_meta(triggers: Sequence[Trigger]) -> dict[str, str]:
    """The runner job Meta that records ``triggers`` (nothing without triggers)."""
    if not triggers:
        return {}
    return {
        META_TRIGGERS: json.dumps([t.as_dict() for t in triggers], sort_keys=True),
        META_TRIGGER_EVENTS: "," + ",".join(t.name for t in triggers) + ",",
    }


def read_triggers(meta: Mapping[str, str]) -> list[Trigger]:
    """The triggers a runner job's Meta records."""
    return [
        Trigger(t["name"], t.get("type", EVENT), t.get("parameters") or {})
        for t in json.loads(meta.get(META_TRIGGERS) or "[]")
    ]


def waiting_on_filter(event_name: str) -> str:
    """A Nomad job-list filter for the deployments that wait on ``event_name``."""
    return f'Meta["{META_TRIGGER_EVENTS}"] contains ",{event_name},"'


def parameter_values(triggers: Sequence[Trigger], events: Sequence[Mapping]) -> dict[str, str]:
    """Dispatch meta for the flow parameters the events' payloads give, as the
    strings a user would type (JSON for lists and objects)."""
    values = {}
    by_name = {event["name"]: event for event in events}
    for trigger in triggers:
        payload = (by_name.get(trigger.name) or {}).get("payload") or {}
        for parameter, key in trigger.parameters.items():
            if key in payload and payload[key] is not None:
                value = payload[key]
                values[parameter] = value if isinstance(value, str) else json.dumps(value)
    return values


def describe(triggers: Sequence[Trigger]) -> str:
    """One line for ``create`` and ``list-runs``: what the deployment waits on."""
    names = [t.name for t in triggers]
    if len(names) == 1:
        return f"the event {names[0]}"
    return "all of the events " + ", ".join(names)


def describe_events(run_meta: Mapping[str, str]) -> str:
    """What started a run, from its runner job's dispatch meta ("" if not events):
    ``event data_ready`` or ``run Etl/nomad-dispatch-...``."""
    events = json.loads(run_meta.get(TRIGGERS_META) or "[]")
    return ", ".join(
        f"run {'/'.join(e['id'].split('/')[:2])}" if e.get("type") == RUN else f"event {e['name']}"
        for e in events
    )
