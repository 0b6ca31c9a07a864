"""A task attempt as dispatch meta, decoded and run by a real bash as Nomad would."""

import base64
import subprocess

import pytest

from metaflow_nomad.deploy.step_jobs import COMMAND_META, dispatch_meta
from metaflow_nomad.errors import NomadException
from metaflow_nomad.model import JobIdentity, TaskLaunch

IDENTITY = JobIdentity("F", "nomad-dispatch-1-abc", "join", "7", 1, "alice")


def _run_as_nomad_would(meta: dict) -> str:
    """The child job's meta reaches the task as NOMAD_META_*; the bootstrap evals the script."""
    env = {"PATH": "/usr/bin:/bin"}
    env.update({f"NOMAD_META_{k}": v for k, v in meta.items() if k.startswith("mf_")})
    script = base64.b64decode(meta[COMMAND_META]).decode()
    return subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_the_task_gets_its_environment_and_input_paths_exactly():
    launch = TaskLaunch(
        script='printf "%s|%s|%s" "$A" "$B" "$METAFLOW_INPUT_PATHS_0$METAFLOW_INPUT_PATHS_1"\n',
        env={
            "A": 'it\'s $HOME `x` "q"',
            "B": "two words",
            "METAFLOW_INPUT_PATHS_0": "run/a/1,",
            "METAFLOW_INPUT_PATHS_1": "run/a/2",
        },
    )
    meta = dispatch_meta(IDENTITY, launch)
    assert _run_as_nomad_would(meta) == 'it\'s $HOME `x` "q"|two words|run/a/1,run/a/2'
    # The ids are the child job's Meta, which every lookup of a run's jobs matches on.
    assert JobIdentity.from_meta(meta) == IDENTITY
    assert meta["mf_input_paths_1"] == "run/a/2"
    assert "$" not in meta[COMMAND_META] and "{" not in meta[COMMAND_META]


def test_an_environment_name_a_shell_cannot_export_is_refused():
    with pytest.raises(NomadException, match="'bad-name' is not a valid shell name"):
        dispatch_meta(IDENTITY, TaskLaunch(script="true", env={"bad-name": "x"}))
