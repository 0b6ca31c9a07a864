"""The usage page: bar lengths follow the numbers, and each pair carries them."""

from __future__ import annotations

import re

from metaflow_nomad.usage_chart import BAR_AREA_PX, USED_COLOUR, bar_px, usage_page
from metaflow_nomad.usage_report import run_usage
from tests.unit.test_usage_report import sampled, unsampled


def pairs(page: str) -> dict[tuple[str, str], dict[str, str]]:
    found = {}
    for attrs in re.findall(r'<g class="bar-pair" ([^>]*)>', page):
        values = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', attrs))
        found[(values["chart"], values["step"])] = values
    return found


def test_bars_share_one_scale_per_chart():
    assert bar_px(1000, 1000) == BAR_AREA_PX
    assert bar_px(413, 1000) == round(0.413 * BAR_AREA_PX)
    assert bar_px(0.001, 1000) == 1  # a use is never drawn as nothing
    assert bar_px(None, 1000) == bar_px(0, 1000) == 0


def test_each_step_has_a_requested_and_a_used_bar_with_its_numbers():
    usage = run_usage(
        "UsageFlow/7",
        ["start", "idle", "hold"],
        [
            unsampled("start", "1"),
            sampled("idle", "2", ["110"], ["0.05"], ["0.02"]),
            sampled("hold", "3", ["413"], ["0.31"], ["0.10"]),
        ],
    )
    page = usage_page(usage)
    found = pairs(page)
    hold = found[("memory", "hold")]
    assert (hold["requested"], hold["used"]) == ("1000", "413.0")
    assert (hold["requested-px"], hold["used-px"]) == (str(BAR_AREA_PX), str(bar_px(413, 1000)))
    assert found[("cpu", "hold")]["used-px"] == str(bar_px(0.31, 1))
    # The step that ended before a sample has its request drawn and no use.
    start = found[("memory", "start")]
    assert (start["used"], start["used-px"]) == ("", "0")
    assert "ended before Nomad&#x27;s first sample" in page
    assert page.count(f'fill="{USED_COLOUR}"') == 4  # idle and hold, memory and CPU
    assert "(suggest 576)" in page


def test_a_run_without_records_says_so():
    page = usage_page(run_usage("F/1", ["start"], []))
    assert "No step of this run has Nomad usage records yet." in page
    assert "Not run on Nomad: start." in page
