"""The step command line is quoted for bash: user values arrive as Metaflow passed them.

Pure quoting logic, checked against a real bash; the same through real Nomad
tasks is in tests/integration/test_byte_parity.py.
"""

import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from metaflow_nomad.render.command_line import (
    ShellExpr,
    shell_cli_options,
    split_input_paths,
    step_command_line,
)

USER_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


def bash_argv(command: str, env: dict | None = None) -> list[str]:
    """The argv bash hands to a program for ``command`` (printed NUL-separated)."""
    out = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"],
        capture_output=True,
        check=True,
        env=env or {},
    ).stdout
    return out.decode().split("\0")[:-1]


@settings(max_examples=60, deadline=None)
@given(tags=st.lists(USER_TEXT, min_size=1, max_size=4), with_spec=USER_TEXT)
def test_every_user_value_is_one_word_bash_does_not_change(tags, with_spec):
    words = " ".join(shell_cli_options({"tag": tuple(tags), "decospecs": [with_spec]}))
    expected = [w for t in tags for w in ("--tag", t)]
    assert bash_argv(words) == [*expected, "--with", with_spec]


def test_dollar_values_are_not_expanded_unlike_dict_to_cli_options():
    assert bash_argv(" ".join(shell_cli_options({"tag": ("$HOME", "${USER}", "$(id)")}))) == [
        "--tag",
        "$HOME",
        "--tag",
        "${USER}",
        "--tag",
        "$(id)",
    ]


def test_only_our_own_references_are_expanded():
    expr, env = split_input_paths("run/start/1")
    assert isinstance(expr, ShellExpr)
    words = " ".join(shell_cli_options({"input_paths": expr}))
    assert bash_argv(words, env) == ["--input-paths", "run/start/1"]


def test_metaflow_option_spelling_is_kept():
    words = list(
        shell_cli_options(
            {"decospecs": ["nomad"], "max_user_code_retries": 0, "quiet": True, "skip": None}
        )
    )
    assert words == ["--with", "nomad", "--max-user-code-retries", "0", "--quiet"]


def test_step_command_line_quotes_names():
    line = step_command_line("python", "my flow.py", {"quiet": True}, "start", {"tag": ("a b",)})
    assert line == "python -u 'my flow.py' --quiet step start --tag 'a b'"
