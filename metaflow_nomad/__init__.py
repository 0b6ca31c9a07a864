"""metaflow-nomad: run Metaflow steps on HashiCorp Nomad."""

# Metaflow imports our decorator while it initialises itself.  Importing it first
# means that, whichever of our modules is imported first, Metaflow's plugin loader
# never meets one of them half-initialised.
import metaflow  # noqa: F401

__version__ = "0.1.0"
