"""Metaflow's entry points: the ``@nomad`` decorator and the command-line interfaces."""

# Metaflow imports our decorator while it initialises itself.  Importing it first
# means that, whichever plugin module is imported first, Metaflow's plugin loader
# never meets one of them half-initialised.
import metaflow  # noqa: F401
