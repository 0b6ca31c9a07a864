"""Pre-launch checks of a step's decorators (with Metaflow's real decorator objects)."""

import pytest
from metaflow.plugins.environment_decorator import EnvironmentDecorator

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
