"""What a real run ships to its tasks: the library, and no test support."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.flows import clean_environ

pytestmark = pytest.mark.integration

READ_PACKAGE = """
import json, sys
from metaflow import Run, namespace
namespace(None)
print(json.dumps(Run(sys.argv[1]).code.tarball.getnames()))
"""


def test_the_code_package_of_a_run_has_the_library_but_no_test_support(run_flow):
    result = run_flow("nomad_flow.py")
    assert result.returncode == 0, result.output
    assert "Computation result: 332833500" in result.output
    names = json.loads(
        subprocess.run(
            [sys.executable, "-c", READ_PACKAGE, f"NomadFlow/{result.run_id}"],
            cwd=run_flow.workdir,
            env={**clean_environ(), **result.env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    # Metaflow places code under a prefix of its own (".mf_code/" today).
    library = [n[n.index("metaflow_nomad/") :] for n in names if "metaflow_nomad/" in n]
    assert "metaflow_nomad/plugin/decorator.py" in library
    assert "metaflow_nomad/runtime/launcher.py" in library
    assert not [n for n in library if n.startswith("metaflow_nomad/testing")], library
