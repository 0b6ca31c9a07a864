# Registration only; the card lives in the metaflow_nomad package.
from metaflow_nomad.plugin.usage_card import NomadUsageCard

CARDS = [NomadUsageCard]
