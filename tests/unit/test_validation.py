"""Single-value checks that are not a step setting's own (those are in test_settings)."""

from __future__ import annotations

import pytest

from metaflow_nomad.validation import variable_path_problem


@pytest.mark.parametrize("path", ["nomad/jobs", "team-a/metaflow_service~1"])
def test_variable_paths_nomad_accepts(path):
    assert variable_path_problem(path) is None


@pytest.mark.parametrize("path", ["", "nomad/jobs metaflow", 'a"b', "x" * 129, "nomad.jobs"])
def test_variable_paths_nomad_refuses(path):
    assert variable_path_problem(path)
