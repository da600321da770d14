"""Working hours: the server's tasks run only inside a weekly window (the ``schedule`` setting).

Two Application Auto Scaling scheduled actions on the service's scalable target
(``aws.appautoscaling.ScheduledAction``, Application Auto Scaling User Guide, "Scheduled scaling"):
at ``start`` on ``days`` the target's capacity goes back to ``minTasks``..``maxTasks``, at ``stop``
to 0..0, so ECS stops every task; both in ``timeZone`` (an IANA name: the actions' ``Timezone``,
daylight saving time followed). Outside the window the load balancer has no target and answers
503; a 0-ACU database pauses ``dbAutoPauseSeconds`` after the last connection closes. The
schedule expression is ``cron(M H ? * DAYS *)`` (minutes, hours, day-of-month, month,
day-of-week, year: the scheduled-action cron format). A deploy outside the window creates the
service with ``desiredCount`` tasks; the next stop action stops them.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_DAYS_RE = re.compile(r"^(?:MON|TUE|WED|THU|FRI|SAT|SUN)(?:-(?:MON|TUE|WED|THU|FRI|SAT|SUN))?"
                      r"(?:,(?:MON|TUE|WED|THU|FRI|SAT|SUN)(?:-(?:MON|TUE|WED|THU|FRI|SAT|SUN))?)*$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
ALLOWED = ('an object {days, start, stop, timeZone}, e.g. {"days": "MON-FRI", "start": "08:00", "stop": "19:00", '
           '"timeZone": "Europe/Berlin"}: days a list or ranges of MON..SUN, start before stop as HH:MM (24 h, '
           "same day), timeZone an IANA time zone name; empty = tasks run all the time")


@dataclass(frozen=True)
class WorkHours:
    days: str
    """Day-of-week field, e.g. ``MON-FRI`` or ``MON,WED,FRI``."""
    start: str
    """``HH:MM``: tasks start (capacity back to minTasks..maxTasks)."""
    stop: str
    """``HH:MM``: tasks stop (capacity 0..0)."""
    time_zone: str
    """IANA time zone of ``start`` and ``stop``."""

    def cron(self, at: str) -> str:
        hours, minutes = at.split(":")
        return f"cron({int(minutes)} {int(hours)} ? * {self.days} *)"

    @property
    def day_count(self) -> int:
        days: set[int] = set()
        for part in self.days.split(","):
            lo, _, hi = part.partition("-")
            i, j = DAY_NAMES.index(lo), DAY_NAMES.index(hi or lo)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        return len(days)


def parse(raw: Any) -> Optional[WorkHours]:
    """The ``schedule`` setting (an object, or its JSON as the engine passes it); None when empty.

    :raises ValueError: with :data:`ALLOWED` and what is wrong.
    """
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "null", "{}")):
        return None
    value: Any = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(ALLOWED) from None
    if not isinstance(value, dict) or not value:
        raise ValueError(ALLOWED)
    unknown = set(value) - {"days", "start", "stop", "timeZone"}
    missing = {"days", "start", "stop", "timeZone"} - set(value)
    if unknown or missing:
        raise ValueError(f"{ALLOWED}; {'unknown ' + ', '.join(sorted(unknown)) if unknown else 'missing ' + ', '.join(sorted(missing))}")
    days = str(value["days"]).strip().upper()
    if not _DAYS_RE.match(days):
        raise ValueError(f"{ALLOWED}; days {value['days']!r} is not of that form")
    start, stop = str(value["start"]).strip(), str(value["stop"]).strip()
    for what, text in (("start", start), ("stop", stop)):
        if not _TIME_RE.match(text):
            raise ValueError(f"{ALLOWED}; {what} {text!r} is not HH:MM")
    if stop <= start:
        raise ValueError(f"{ALLOWED}; stop {stop} is not after start {start}")
    zone = str(value["timeZone"]).strip()
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{ALLOWED}; {zone!r} is not a known time zone") from None
    return WorkHours(days=days, start=start, stop=stop, time_zone=zone)


def build_actions(name: str, hours: WorkHours, *, target: aws.appautoscaling.Target, min_tasks: int, max_tasks: int,
                  parent: pulumi.Resource) -> tuple[aws.appautoscaling.ScheduledAction, aws.appautoscaling.ScheduledAction]:
    """The start and stop scheduled actions on ``target`` (children of ``parent``), created one after
    the other."""
    common = dict(service_namespace=target.service_namespace, resource_id=target.resource_id,
                  scalable_dimension=target.scalable_dimension, timezone=hours.time_zone)
    start = aws.appautoscaling.ScheduledAction(
        f"{name}-work-hours-start", schedule=hours.cron(hours.start),
        scalable_target_action={"min_capacity": min_tasks, "max_capacity": max_tasks}, **common,
        opts=pulumi.ResourceOptions(parent=parent))
    stop = aws.appautoscaling.ScheduledAction(
        f"{name}-work-hours-stop", schedule=hours.cron(hours.stop),
        scalable_target_action={"min_capacity": 0, "max_capacity": 0}, **common,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[start]))
    return start, stop
