"""The Deployer's `resume` refuses flow parameters before it starts anything: a
resumed run keeps its origin run's values."""

import pytest

from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.deploy.deployer_objects import NomadWorkflowsDeployedFlow


def test_resume_with_parameters_says_why_and_what_to_do_instead():
    deployed = object.__new__(NomadWorkflowsDeployedFlow)  # no deployer: nothing may run
    with pytest.raises(NomadException) as info:
        deployed.resume(origin_run_id="nomad-dispatch-1-a", should_fail=False)
    message = str(info.value)
    assert "resume takes no flow parameters (got should_fail)" in message
    assert "keeps the parameter values of nomad-dispatch-1-a" in message
    assert "Trigger a new run to use other values." in message
