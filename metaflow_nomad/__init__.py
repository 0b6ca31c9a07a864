"""metaflow-nomad: run Metaflow steps on HashiCorp Nomad.

Importing the package loads nothing else: the per-attempt launcher
(``runtime.attempt``) must stay free of Metaflow.  ``plugin`` (what Metaflow's
plugin loader imports) loads Metaflow first.
"""

__version__ = "0.1.0"
