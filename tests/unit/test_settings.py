"""Settings resolution: precedence, CPU units, defaults and validation."""

import pytest

from metaflow_nomad.errors import NomadException, NomadSettingsError
from metaflow_nomad.settings import project_defaults_for_step, resolve_step_settings


def resolve(nomad=None, resources=None, config=None, project=None, standard=None):
    return resolve_step_settings(
        "train",
        nomad or {},
        resources or {},
        config=config or {},
        project_defaults=project or {},
        standard_env=standard or {},
        python_version=(3, 11),
    )


def test_user_guide_example_nomad_beats_resources():
    s = resolve({"cpu": 2, "memory": 1000, "disk": 500}, {"cpu": 1, "memory": 500})
    assert (s.cpu, s.memory, s.disk) == (2000, 1000, 500)
    assert s.sources["cpu"] == "@nomad"


def test_resources_beat_config_which_beats_project_which_beats_defaults():
    s = resolve(
        resources={"memory": 500},
        config={"NOMAD_MEMORY": "700", "NOMAD_DISK": "800", "NOMAD_CPU": "3"},
        project={"disk": 900, "cpu": 5, "gpu_vendor": "amd", "image": "proj:1"},
    )
    assert (s.memory, s.sources["memory"]) == (500, "@resources")
    assert (s.disk, s.sources["disk"]) == (800, "METAFLOW_NOMAD_DISK")
    assert (s.cpu, s.sources["cpu"]) == (3000, "METAFLOW_NOMAD_CPU")
    assert (s.gpu_vendor, s.image) == ("amd", "proj:1")


def test_standard_nomad_env_is_the_last_fallback():
    s = resolve(standard={"NOMAD_REGION": "eu", "NOMAD_NAMESPACE": "ml"})
    assert (s.region, s.nomad_namespace) == ("eu", "ml")
    s = resolve(config={"NOMAD_REGION": "us"}, standard={"NOMAD_REGION": "eu"})
    assert s.region == "us"


def test_defaults():
    s = resolve()
    assert s.driver == "docker"
    assert s.image == "python:3.11"
    assert (s.cpu, s.memory, s.disk, s.gpu) == (1000, 4096, 10240, 0)
    assert s.datacenters == ("*",)


def test_default_image_from_config():
    assert resolve(config={"NOMAD_DEFAULT_IMAGE": "corp/py:1"}).image == "corp/py:1"


@pytest.mark.parametrize(
    ("cpu", "mhz"), [(1, 1000), (0.5, 500), (2, 2000), (99, 99000), (100, 100), (4000, 4000)]
)
def test_cpu_below_100_is_vcpus_and_100_or_more_is_mhz(cpu, mhz):
    assert resolve({"cpu": cpu}).cpu == mhz


def test_mhz_per_vcpu_is_configurable():
    assert resolve({"cpu": 2}, config={"NOMAD_MHZ_PER_VCPU": "2400"}).cpu == 4800


def test_with_strings_are_accepted():
    s = resolve(
        {
            "cpu": "4000",
            "memory": "2048",
            "datacenters": "dc1,dc2",
            "constraints": '[{"attribute": "${attr.kernel.name}", "value": "linux"}]',
        }
    )
    assert (s.cpu, s.memory, s.datacenters) == (4000, 2048, ("dc1", "dc2"))
    assert s.constraints == (
        {"attribute": "${attr.kernel.name}", "operator": "=", "value": "linux"},
    )


def test_resources_gpu_is_honoured():
    assert resolve(resources={"gpu": 2}).gpu == 2


def test_project_file_step_section_beats_defaults():
    document = {"defaults": {"memory": 100}, "steps": {"train": {"memory": 200}}}
    assert project_defaults_for_step(document, "train") == {"memory": 200}
    assert project_defaults_for_step(document, "other") == {"memory": 100}


def test_error_names_step_setting_value_source_and_accepted_form():
    with pytest.raises(NomadSettingsError) as info:
        resolve({"memory": -5})
    message = str(info.value)
    assert message == (
        "Step 'train': setting 'memory' = -5 (from @nomad) is not valid. "
        "Expected a whole number of MB >= 10."
    )


CPU = (
    "a positive number: below 100 it counts vCPUs (e.g. cpu=2), 100 or more is MHz (e.g. cpu=4000)"
)


def problem(setting, value, accepted, source="@nomad"):
    return (
        f"Step 'train': setting '{setting}' = {value!r} (from {source}) is not valid. "
        f"Expected {accepted}."
    )


def problems_raised(**layers) -> list[str]:
    """The lines of the one error that holds every problem of the step."""
    with pytest.raises(NomadException) as info:
        resolve(**layers)
    assert info.value.headline == "Invalid @nomad settings"
    assert all(isinstance(p, NomadSettingsError) for p in info.value.problems)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in info.value.problems]
    return lines


def test_every_bad_value_of_a_step_is_reported_at_once():
    assert problems_raised(
        nomad={"memory": "lots", "cpu": -1, "driver": "podman", "priority": 0},
        config={"NOMAD_DISK": "big"},
        project={"gpu_vendor": "NVIDIA!"},
    ) == [
        problem("driver", "podman", "one of: docker, exec, raw_exec"),
        problem("cpu", -1, CPU),
        problem("memory", "lots", "a whole number of MB >= 10"),
        problem("disk", "big", "a whole number of MB > 0", source="METAFLOW_NOMAD_DISK"),
        problem(
            "gpu_vendor",
            "NVIDIA!",
            "a device vendor such as 'nvidia' or 'amd'",
            source="metaflow_nomad.yaml",
        ),
        problem("priority", 0, "a whole number between 1 and 100"),
    ]


def test_every_unknown_project_file_key_is_reported_with_the_bad_values():
    lines = problems_raised(nomad={"memory": 1}, project={"memroy": 100, "cpus": 2})
    assert [line.split(" = ")[0] for line in lines] == [
        "Step 'train': setting 'cpus'",
        "Step 'train': setting 'memroy'",
        "Step 'train': setting 'memory'",
    ]


def test_a_bad_mhz_per_vcpu_does_not_hide_a_bad_cpu():
    assert problems_raised(nomad={"cpu": "fast"}, config={"NOMAD_MHZ_PER_VCPU": "0"}) == [
        problem(
            "METAFLOW_NOMAD_MHZ_PER_VCPU",
            "0",
            "a positive number of MHz per vCPU, e.g. 1000",
            source="config",
        ),
        problem("cpu", "fast", CPU),
    ]


def test_every_docker_setting_on_a_raw_exec_step_is_reported():
    assert problems_raised(
        nomad={"driver": "raw_exec", "network_mode": "host", "volumes": ["/d:/d"]}
    ) == [
        problem("network_mode", "host", "a setting of the docker driver; this step uses raw_exec"),
        problem("volumes", ["/d:/d"], "a setting of the docker driver; this step uses raw_exec"),
    ]


def test_registry_auth_is_a_variable_path_of_a_docker_step():
    settings = resolve(config={"NOMAD_REGISTRY_AUTH": "nomad/jobs"})
    assert settings.docker.registry_auth == "nomad/jobs"
    assert settings.sources["registry_auth"] == "METAFLOW_NOMAD_REGISTRY_AUTH"
    path = "a Nomad Variable path: 1 to 128 letters, digits, '-', '_', '~' or '/'"
    with pytest.raises(NomadSettingsError) as info:
        resolve({"registry_auth": "nomad/jobs registry"})
    assert str(info.value) == problem(
        "registry_auth", "nomad/jobs registry", f"{path}, e.g. nomad/jobs"
    )
    with pytest.raises(NomadSettingsError) as info:
        resolve({"driver": "exec", "registry_auth": "nomad/jobs"})
    assert str(info.value) == problem(
        "registry_auth", "nomad/jobs", "a setting of the docker driver; this step uses exec"
    )


def test_docker_values_are_checked_even_when_the_driver_is_bad():
    assert problems_raised(nomad={"driver": "dockr", "image_pull_timeout": "5 minutes"}) == [
        problem("driver", "dockr", "one of: docker, exec, raw_exec"),
        problem("image_pull_timeout", "5 minutes", "a duration such as 90s, 10m or 1h30m"),
    ]


@pytest.mark.parametrize("value", ["inf", float("inf"), "nan"])
def test_infinite_or_nan_numbers_are_bad_values(value):
    with pytest.raises(NomadSettingsError) as info:
        resolve({"memory": value})
    assert str(info.value) == problem("memory", value, "a whole number of MB >= 10")
