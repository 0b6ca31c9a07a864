"""Flow parameters -> dispatch meta -> `run` options in the runner; Configs -> the
runner's environment."""

import json

from metaflow_nomad.deploy.parameters import config_value_env, run_options


def test_only_dispatched_parameters_become_options_in_definition_order():
    job_meta = {"beta": "x y", "alpha": "3", "other": "1", "metaflow.flow_name": "F"}
    assert run_options(["alpha", "beta", "gamma"], job_meta) == [
        "--alpha",
        "3",
        "--beta",
        "x y",
    ]


def test_a_parameter_dispatched_as_an_empty_string_is_passed_on():
    assert run_options(["greeting"], {"greeting": ""}) == ["--greeting", ""]


def test_configs_are_read_from_the_code_package_by_name():
    env = config_value_env(["cfg", "other"])
    assert json.loads(env["METAFLOW_FLOW_CONFIG_VALUE"]) == {"cfg": "kv.cfg", "other": "kv.other"}


def test_a_flow_without_configs_sets_nothing():
    assert config_value_env([]) == {}
