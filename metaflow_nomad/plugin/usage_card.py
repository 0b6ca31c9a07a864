"""``@card(type="nomad_usage")``: the run's usage chart as a Metaflow card.

Put it on the last step: it draws every step that has finished by the time the
card renders (the card's own step is still running, so it has no record yet).
"""

from __future__ import annotations

from metaflow.plugins.cards.card_modules.card import MetaflowCard


class NomadUsageCard(MetaflowCard):
    type = "nomad_usage"

    def render(self, task) -> str:
        from metaflow_nomad.plugin.usage_reading import read_run_usage
        from metaflow_nomad.usage_chart import usage_page

        return usage_page(read_run_usage(task.parent.parent))
