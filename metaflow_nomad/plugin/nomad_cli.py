"""``python flow.py nomad ...``: the command group Metaflow registers.

Each command lives in a module of its own; this one only assembles the group.
"""

from __future__ import annotations

from metaflow._vendor import click

from metaflow_nomad.plugin.doctor_command import doctor
from metaflow_nomad.plugin.jobs_commands import kill, list_jobs
from metaflow_nomad.plugin.render_command import render
from metaflow_nomad.plugin.usage_command import usage


@click.group()
def cli():
    pass


@cli.group(help="Commands related to Nomad.")
def nomad():
    pass


for _command in (render, list_jobs, kill, doctor, usage):
    nomad.add_command(_command)
