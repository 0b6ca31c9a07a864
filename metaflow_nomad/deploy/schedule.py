"""``@schedule`` -> the periodic runner job's ``cron`` and ``time_zone``.

Metaflow's ``@schedule`` speaks the six-field cron of AWS EventBridge
(``minutes hours day-of-month month day-of-week year``, with ``?``).  Nomad's
parser takes standard five-field cron, so the year is dropped and ``?`` (which
only means "no value") becomes ``*``, as Metaflow's Argo integration does.  A
five-field expression is taken as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaflow_nomad.errors import NomadException


class ScheduleError(NomadException):
    headline = "Invalid @schedule"


@dataclass(frozen=True)
class Schedule:
    cron: str
    time_zone: str | None


def flow_schedule(flow) -> Schedule | None:
    """The flow's ``@schedule`` as a Nomad periodic trigger, or None without one."""
    decos = [d for d in getattr(flow, "_flow_decorators", {}).get("schedule", [])]
    if not decos:
        return None
    deco = decos[0]
    expression = getattr(deco, "schedule", None)
    if not expression:
        return None
    return Schedule(
        cron=to_nomad_cron(expression),
        time_zone=deco.attributes.get("timezone") or None,
    )


def to_nomad_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) == 6:
        fields = fields[:5]
    if len(fields) != 5:
        raise ScheduleError(
            f"@schedule(cron={expression!r}) has {len(fields)} fields. Use five "
            "(minute hour day-of-month month day-of-week) or EventBridge's six "
            "(the same plus year), e.g. '0 6 * * *'."
        )
    return " ".join(fields).replace("?", "*")
