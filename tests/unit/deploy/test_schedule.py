"""@schedule -> the periodic runner job's cron."""

import pytest

from metaflow_nomad.deploy.schedule import ScheduleError, to_nomad_cron


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("0 0 * * ? *", "0 0 * * *"),  # @schedule(daily=True)
        ("0 * * * ? *", "0 * * * *"),  # hourly
        ("0 0 ? * SUN *", "0 0 * * SUN"),  # weekly
        ("*/5 9-17 * * MON-FRI", "*/5 9-17 * * MON-FRI"),  # five fields kept as they are
    ],
)
def test_metaflow_schedules_become_nomad_cron(expression, expected):
    assert to_nomad_cron(expression) == expected


@pytest.mark.parametrize("expression", ["0 0 *", "1 2 3 4 5 6 7"])
def test_a_cron_with_the_wrong_number_of_fields_is_refused(expression):
    with pytest.raises(ScheduleError, match="fields"):
        to_nomad_cron(expression)
