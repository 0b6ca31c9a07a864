"""What `nomad-workflows resume` reads from the deployed runner job before it
dispatches: whether the deployment accepts a resume, and its steps."""

from metaflow_nomad.plugin.deploy.resume import deployed_steps, missing_resume_meta


def test_a_deployment_made_before_resume_is_named_by_the_keys_it_lacks():
    old = {"ParameterizedJob": {"MetaOptional": ["alpha"]}}
    assert missing_resume_meta(old) == [
        "metaflow.resume_origin_run_id",
        "metaflow.resume_step",
    ]


def test_a_current_deployment_accepts_a_resume():
    keys = ["alpha", "metaflow.resume_origin_run_id", "metaflow.resume_step"]
    assert missing_resume_meta({"ParameterizedJob": {"MetaOptional": keys}}) == []


def test_the_steps_come_from_the_runner_job_in_flow_order():
    assert deployed_steps({"Meta": {"metaflow.steps": "start,process,end"}}) == [
        "start",
        "process",
        "end",
    ]
    assert deployed_steps({"Meta": {}}) == []
