"""Metaflow's entry points: the ``@nomad`` decorator and the command-line interfaces."""
