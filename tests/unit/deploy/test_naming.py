"""Deployment names per project/branch, and run ids derived from runner jobs."""

import pytest

from metaflow_nomad.deploy.naming import (
    MAX_NAME_LENGTH,
    DeploymentNameError,
    attempt_run_id,
    base_run_id,
    deployment_name,
    production_token_prefix,
    run_id_for_runner_job,
    schedule_job_id,
)
from metaflow_nomad.model import JobIdentity


def test_a_flow_is_deployed_under_its_lower_cased_name():
    assert deployment_name("HelloFlow") == "helloflow"


def test_a_project_flow_is_named_per_project_and_branch():
    prod = deployment_name("HelloFlow", "ml.prod.HelloFlow")
    alice = deployment_name("HelloFlow", "ml.user.alice@example.com.HelloFlow")
    assert prod == "ml.prod.helloflow"
    assert alice == "ml.user.alice-example.com.helloflow"
    assert prod != alice


def test_a_long_derived_name_is_shortened_and_stays_unique():
    one = deployment_name("F", "p." + "a" * 80 + ".F")
    two = deployment_name("F", "p." + "a" * 79 + "b.F")
    assert len(one) <= MAX_NAME_LENGTH and len(two) <= MAX_NAME_LENGTH
    assert one != two


@pytest.mark.parametrize("given", ["Bad Name", "-x", "x" * (MAX_NAME_LENGTH + 1), "a/b"])
def test_an_invalid_given_name_is_refused_not_changed(given):
    with pytest.raises(DeploymentNameError) as exc:
        deployment_name("F", given=given)
    assert repr(given) in str(exc.value)


def test_a_given_name_cannot_be_combined_with_project():
    with pytest.raises(DeploymentNameError, match="--branch or --production"):
        deployment_name("F", "p.prod.F", given="mine")


def test_run_ids_are_unique_per_runner_job_and_short_enough_for_step_job_ids():
    dispatched = run_id_for_runner_job("helloflow/dispatch-1795602587-12fdc370")
    other_branch = run_id_for_runner_job("ml.test.x.helloflow/dispatch-1795602587-12fdc370")
    periodic = run_id_for_runner_job("helloflow-schedule/periodic-1795602600")
    assert dispatched.startswith("nomad-dispatch-1795602587-")
    assert periodic.startswith("nomad-periodic-1795602600-")
    assert dispatched != other_branch
    # Step job IDs keep 40 characters of a run id: resumed runs must stay apart.
    resumed = attempt_run_id(dispatched, 12)
    ids = {JobIdentity("F", r, "s", "1", 0, "u").job_id for r in (dispatched, resumed)}
    assert len(ids) == 2 and len(resumed) <= 40


def test_resumed_run_ids_lead_back_to_their_run():
    base = run_id_for_runner_job("f/dispatch-1-abc")
    assert attempt_run_id(base, 0) == base
    assert base_run_id(attempt_run_id(base, 3)) == base
    assert base_run_id(base) == base


def test_schedule_job_sits_next_to_the_deployment():
    assert schedule_job_id("helloflow") == "helloflow-schedule"


def test_project_branches_keep_separate_production_tokens():
    one = production_token_prefix("ml.prod.f", "ml", "prod")
    two = production_token_prefix("ml.test.x.f", "ml", "test.x")
    assert one.startswith("mfprj-") and two.startswith("mfprj-") and one != two
    assert production_token_prefix("helloflow", None, None) == "helloflow"
