"""Which attempt a runner makes, from what earlier runners left in the datastore.

The datastore is a stand-in that answers `get_task_datastores` from a dict: the
decision is pure logic over what exists (the real datastore is exercised by the
lost-runner integration test).
"""

from metaflow_nomad.deploy.attempts import plan_runner_attempt, resume_request


class _Datastore:
    def __init__(self, done: dict):
        self._done = done  # (run_id, step) -> [{"_task_ok": bool}]

    def get_task_datastores(self, run_id, steps):
        return [t for step in steps for t in self._done.get((run_id, step), [])]


def test_a_first_runner_starts_the_run_under_its_own_id():
    plan = plan_runner_attempt(_Datastore({}), "nomad-dispatch-1-a")
    assert (plan.run_id, plan.origin_run_id, plan.earlier) == ("nomad-dispatch-1-a", None, ())


def test_a_replacement_runner_resumes_the_latest_attempt():
    done = {
        ("r", "_parameters"): [{}],
        ("r-r1", "_parameters"): [{}],
        ("r-r1", "end"): [{"_task_ok": False}],
    }
    plan = plan_runner_attempt(_Datastore(done), "r")
    assert (plan.run_id, plan.origin_run_id) == ("r-r2", "r-r1")
    assert plan.earlier == ("r", "r-r1") and not plan.already_succeeded


def test_a_run_that_already_ended_well_is_not_run_again():
    done = {("r", "_parameters"): [{}], ("r", "end"): [{"_task_ok": True}]}
    assert plan_runner_attempt(_Datastore(done), "r").already_succeeded


def test_a_resume_dispatch_resumes_the_given_run_under_its_own_id():
    requested = resume_request(
        {"metaflow.resume_origin_run_id": "nomad-dispatch-1-a", "metaflow.resume_step": "b"}
    )
    plan = plan_runner_attempt(_Datastore({}), "nomad-dispatch-2-b", requested=requested)
    assert (plan.run_id, plan.origin_run_id, plan.earlier) == (
        "nomad-dispatch-2-b",
        "nomad-dispatch-1-a",
        (),
    )
    assert plan.step_to_rerun == "b" and not plan.already_succeeded


def test_a_lost_resume_runner_resumes_what_it_left_not_the_origin_again():
    requested = resume_request({"metaflow.resume_origin_run_id": "o"})
    plan = plan_runner_attempt(_Datastore({("r", "_parameters"): [{}]}), "r", requested=requested)
    assert (plan.run_id, plan.origin_run_id, plan.step_to_rerun) == ("r-r1", "r", None)


def test_a_plain_dispatch_is_not_a_resume():
    assert resume_request({"alpha": "1", "metaflow.resume_step": "b"}) is None
