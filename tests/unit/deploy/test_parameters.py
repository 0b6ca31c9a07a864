"""Flow parameters -> dispatch meta -> `run` options in the runner."""

from metaflow_nomad.deploy.parameters import meta_env_name, run_options


def test_meta_keys_reach_the_task_under_nomads_variable_names():
    # Observed on Nomad 1.6: "-" becomes "_", case and dots are kept.
    assert meta_env_name("alpha") == "NOMAD_META_alpha"
    assert meta_env_name("learning-rate") == "NOMAD_META_learning_rate"


def test_only_dispatched_parameters_become_options_in_definition_order():
    environ = {"NOMAD_META_beta": "x y", "NOMAD_META_alpha": "3", "NOMAD_META_other": "1"}
    assert run_options(["alpha", "beta", "gamma"], environ) == [
        "--alpha",
        "3",
        "--beta",
        "x y",
    ]
