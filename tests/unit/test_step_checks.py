"""Pre-launch checks of a step's decorators (with Metaflow's real decorator objects)."""

import pytest
from metaflow.plugins.environment_decorator import EnvironmentDecorator
from metaflow.plugins.kubernetes.kubernetes_decorator import KubernetesDecorator

from metaflow_nomad.errors import NomadException
from metaflow_nomad.plugin.step_settings import check_step


def environment(variables: dict) -> EnvironmentDecorator:
    return EnvironmentDecorator(attributes={"vars": variables})


def test_environment_name_that_cannot_carry_an_exact_value_is_refused():
    with pytest.raises(NomadException) as error:
        check_step("start", [environment({"A.B": "${x}"})])
    assert str(error.value) == (
        "Step 'start': @environment variable 'A.B' has a value that Nomad would change (it "
        "contains '${' or is not in Unicode NFC form), and only a variable whose name is a "
        "shell name (letters, digits, _) can be delivered exactly. Rename the variable."
    )


def test_environment_values_nomad_would_change_are_fine_under_shell_names():
    decos = [environment({"A_B": "${NOMAD_ALLOC_ID}", "A.C": "plain"})]
    assert check_step("start", decos) is None


def test_every_problem_of_the_step_decorators_is_reported():
    decos = [
        environment({"AWS_SECRET_ACCESS_KEY": "x", "A.B": "${x}"}),
        KubernetesDecorator(),
    ]
    with pytest.raises(NomadException) as error:
        check_step("start", decos)
    assert error.value.headline == "Invalid @nomad settings"
    assert str(error.value).splitlines() == [
        "Step 'start': @environment sets a credential, but with @nomad there must be no "
        "credentials: AWS_SECRET_ACCESS_KEY would be stored in the jobspec in plain text; "
        "deliver it with a Nomad Variable or Vault template block (see docs/s3.md).",
        "Step 'start': @environment variable 'A.B' has a value that Nomad would change (it "
        "contains '${' or is not in Unicode NFC form), and only a variable whose name is a "
        "shell name (letters, digits, _) can be delivered exactly. Rename the variable.",
        "Step 'start': @nomad cannot be combined with @kubernetes. Remove one of them.",
    ]


def test_a_project_file_that_is_not_yaml_is_one_line_naming_file_and_line(tmp_path):
    from metaflow_nomad.plugin.step_settings import read_yaml_mapping

    path = tmp_path / "metaflow_nomad.yaml"
    path.write_text("defaults:\n  memory: 100\n  cpu: [1,\n")
    with pytest.raises(NomadException) as info:
        read_yaml_mapping(str(path))
    assert str(info.value).startswith(f"{path}:4: not valid YAML (")
    assert str(info.value).endswith("Fix the file.")


@pytest.mark.parametrize("name", ["METAFLOW_SERVICE_AUTH_KEY", "METAFLOW_SERVICE_HEADERS"])
def test_the_metadata_service_key_is_a_credential_too(name):
    with pytest.raises(NomadException) as error:
        check_step("start", [environment({name: "x"})])
    assert f"no credentials: {name} would be stored in the jobspec in plain text" in str(
        error.value
    )
