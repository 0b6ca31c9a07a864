"""``Deployer("flow.py").nomad_workflows()``: Metaflow's Deployer API for Nomad.

Registered in the extension's ``DEPLOYER_IMPL_PROVIDERS_DESC``.  Metaflow
imports this module with every ``import metaflow``, so it imports nothing but
Metaflow's own base class; the objects it returns live in ``deployer_objects``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from metaflow.runner.deployer_impl import DeployerImpl


class NomadWorkflowsDeployer(DeployerImpl):
    """
    Deployer implementation for Nomad (``python flow.py nomad-workflows ...``).

    Parameters
    ----------
    name : str, optional, default None
        Deployment name. The flow name (or, with @project, the project flow name)
        is used if it is not given.
    """

    TYPE: ClassVar[str | None] = "nomad-workflows"

    def __init__(self, deployer_kwargs: dict[str, str], **kwargs):
        self._deployer_kwargs = deployer_kwargs
        super().__init__(**kwargs)

    @property
    def deployer_kwargs(self) -> dict[str, Any]:
        return self._deployer_kwargs

    @staticmethod
    def deployed_flow_type():
        from metaflow_nomad.plugin.deploy.deployer_objects import NomadWorkflowsDeployedFlow

        return NomadWorkflowsDeployedFlow

    def create(self, **kwargs):
        """
        Deploy this flow to Nomad (``nomad-workflows create``).

        Parameters
        ----------
        authorize : str, optional
            Production token of a deployment someone else owns.
        generate_new_token : bool, optional
            Move the deployment to a new production namespace.
        given_token : str, optional
            Use this production token.
        tags : List[str], optional
            Tags for every run of the deployment.
        max_workers : int, optional, default 16
            Parallel tasks per run.
        runner_cpu, runner_memory, runner_disk : optional
            The runner job's resources.
        runner_template : str, optional
            A runner template name or path.

        Returns
        -------
        NomadWorkflowsDeployedFlow
        """
        from metaflow_nomad.plugin.deploy.deployer_objects import NomadWorkflowsDeployedFlow

        return self._create(NomadWorkflowsDeployedFlow, **kwargs)


_addl_stubgen_modules = ["metaflow_nomad.plugin.deploy.deployer_objects"]
