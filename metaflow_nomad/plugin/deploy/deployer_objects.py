"""The Deployer API's objects for Nomad: a deployed flow and a triggered run.

Every action runs the flow's own ``nomad-workflows`` command in a subprocess
(with the Deployer's environment and directory), as Metaflow's Argo Workflows
objects do, so the API and the command line cannot disagree.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from typing import ClassVar

from metaflow.runner.deployer import (
    DeployedFlow,
    Deployer,
    TriggeredRun,
    generate_fake_flow_file_contents,
)
from metaflow.runner.utils import get_lower_level_group, handle_timeout, temporary_fifo

from metaflow_nomad.errors import NomadException


def _command(deployer, name: str, **kwargs) -> list[str]:
    group = get_lower_level_group(
        deployer.api, deployer.top_level_kwargs, deployer.TYPE, deployer.deployer_kwargs
    )
    return [sys.executable, *getattr(group, name)(**kwargs)]


def _run(deployer, name: str, **kwargs):
    pid = deployer.spm.run_command(
        _command(deployer, name, **kwargs),
        env=deployer.env_vars,
        cwd=deployer.cwd,
        show_output=deployer.show_output,
    )
    command = deployer.spm.get(pid)
    command.sync_wait()
    return command


class NomadWorkflowsTriggeredRun(TriggeredRun):
    """A run started by ``trigger`` (or by the schedule)."""

    @property
    def run_id(self) -> str:
        return self.pathspec.split("/", 1)[1]

    @property
    def run(self):
        """The Metaflow ``Run``: after a lost runner, the resumed one (``<run id>-rN``)."""
        from metaflow_nomad.deploy.attempts import latest_client_run

        flow_name, run_id = self.pathspec.split("/", 1)
        return latest_client_run(flow_name, run_id)

    @property
    def status(self) -> str | None:
        """Pending, Running, Succeeded, Failed or Terminated (None if it cannot be read)."""
        command = _run(self.deployer, "status", run_id=self.run_id)
        if command.process.returncode != 0:
            return None
        with open(command.log_files["stdout"]) as handle:
            lines = [line.strip() for line in handle if line.strip()]
        return lines[-1] if lines else None

    @property
    def is_running(self) -> bool:
        return self.status in ("Pending", "Running")

    def wait_for_completion(self, check_interval: int = 5, timeout: int | None = None) -> None:
        start = time.time()
        while self.is_running:
            if timeout is not None and time.time() - start > timeout:
                raise TimeoutError(f"Run {self.pathspec} did not finish within {timeout}s.")
            time.sleep(check_interval)

    def terminate(self, **kwargs) -> bool:
        """Stop the run's runner and every step job it started."""
        return (
            _run(self.deployer, "terminate", run_id=self.run_id, **kwargs).process.returncode == 0
        )


class NomadWorkflowsDeployedFlow(DeployedFlow):
    """A flow deployed to Nomad by ``nomad-workflows create``."""

    TYPE: ClassVar[str | None] = "nomad-workflows"

    def trigger(self, **kwargs) -> NomadWorkflowsTriggeredRun:
        """Start a run; keyword arguments are the flow's parameters."""
        return self._start_run("trigger", **kwargs)

    def resume(
        self, origin_run_id: str, step_to_rerun: str | None = None, **kwargs
    ) -> NomadWorkflowsTriggeredRun:
        """
        Resume a run on Nomad: a new run of this deployment, known at once like a
        triggered one, that reuses every task ``origin_run_id`` finished and runs
        the rest (Metaflow's ``resume``).

        Parameters
        ----------
        origin_run_id : str
            The run to resume.
        step_to_rerun : str, optional
            Run this step again, and the steps after it, even if it finished.

        Returns
        -------
        NomadWorkflowsTriggeredRun
        """
        if kwargs:
            raise NomadException(
                f"resume takes no flow parameters (got {', '.join(sorted(kwargs))}): a resumed "
                f"run keeps the parameter values of {origin_run_id}, since Metaflow's resume "
                "clones them and the steps it runs again read them from the tasks they "
                "follow. Trigger a new run to use other values."
            )
        step = {"step_to_rerun": step_to_rerun} if step_to_rerun else {}
        return self._start_run("resume", origin_run_id=origin_run_id, **step)

    def _start_run(self, command_name: str, **kwargs) -> NomadWorkflowsTriggeredRun:
        """Run ``trigger`` or ``resume``; the new run's id comes back through a fifo."""
        with temporary_fifo() as (attribute_file_path, attribute_file_fd):
            pid = self.deployer.spm.run_command(
                _command(
                    self.deployer,
                    command_name,
                    deployer_attribute_file=attribute_file_path,
                    **kwargs,
                ),
                env=self.deployer.env_vars,
                cwd=self.deployer.cwd,
                show_output=self.deployer.show_output,
            )
            command = self.deployer.spm.get(pid)
            content = handle_timeout(attribute_file_fd, command, self.deployer.file_read_timeout)
            command.sync_wait()
            if command.process.returncode == 0:
                return NomadWorkflowsTriggeredRun(deployer=self.deployer, content=content)
        raise NomadException(
            f"Could not {command_name} {self.deployer.name} on Nomad: see the command's output."
        )

    def delete(self, **kwargs) -> bool:
        """Delete the deployment; runs in flight go on."""
        return _run(self.deployer, "delete", **kwargs).process.returncode == 0

    @property
    def production_token(self) -> str | None:
        meta = _deployment_meta(self.deployer.name)
        return (meta or {}).get("metaflow.production_token")

    @classmethod
    def from_deployment(cls, identifier: str, metadata: str | None = None):
        """The deployment named ``identifier``, from its runner job's Meta."""
        from metaflow.client.core import get_metadata

        meta = _deployment_meta(identifier)
        if meta is None:
            raise NomadException(f"No deployment {identifier} found on Nomad.")
        flow_name = meta["metaflow.flow_name"]
        project = meta.get("metaflow.project_name")
        contents = generate_fake_flow_file_contents(
            flow_name=flow_name,
            param_info=json.loads(meta.get("metaflow.parameters") or "{}"),
            project_name=project,
        )
        with tempfile.NamedTemporaryFile(suffix=".py", delete=False, mode="w") as flow_file:
            flow_file.write(contents)
        env = {"METAFLOW_USER": meta.get("metaflow.owner", "")}
        if project:
            deployer = Deployer(
                flow_file.name, env=env, **_project_options(meta.get("metaflow.branch_name", ""))
            ).nomad_workflows()
        else:
            deployer = Deployer(flow_file.name, env=env).nomad_workflows(name=identifier)
        deployer.name = identifier
        deployer.flow_name = flow_name
        deployer.metadata = metadata or get_metadata()
        return cls(deployer=deployer)

    @classmethod
    def list_deployed_flows(cls, flow_name: str | None = None):
        """Every deployment on Nomad (of ``flow_name`` only, if given)."""
        from metaflow_nomad.api.client import default_client
        from metaflow_nomad.deploy.runner_job import DISPATCH, META_RUNNER_KIND
        from metaflow_nomad.model import META_DEPLOYMENT

        clauses = [f'Meta["{META_RUNNER_KIND}"] == "{DISPATCH}"']
        if flow_name:
            clauses.append(f'Meta["metaflow.flow_name"] == "{flow_name}"')
        jobs = default_client().list_jobs(filter_expr=" and ".join(clauses))
        for job in jobs:
            if job.get("ParentID") or job.get("Stop"):
                continue
            yield cls.from_deployment((job.get("Meta") or {}).get(META_DEPLOYMENT) or job["ID"])

    @classmethod
    def get_triggered_run(cls, identifier: str, run_id: str, metadata: str | None = None):
        deployed = cls.from_deployment(identifier, metadata)
        content = json.dumps(
            {
                "metadata": deployed.deployer.metadata,
                "pathspec": f"{deployed.deployer.flow_name}/{run_id}",
                "name": run_id,
            }
        )
        return NomadWorkflowsTriggeredRun(deployer=deployed.deployer, content=content)


def _deployment_meta(identifier: str) -> dict | None:
    from metaflow_nomad.api.client import default_client
    from metaflow_nomad.plugin.deploy.context import deployment_namespace

    job = default_client().job(identifier, namespace=deployment_namespace())
    if job is None or job.get("Stop"):
        return None
    return job.get("Meta") or {}


def _project_options(branch: str) -> dict:
    """Deployer options that select the deployment's @project branch again."""
    if branch == "prod":
        return {"production": True}
    if branch.startswith("prod."):
        return {"production": True, "branch": branch[len("prod.") :]}
    if branch.startswith("test."):
        return {"branch": branch[len("test.") :]}
    return {}
