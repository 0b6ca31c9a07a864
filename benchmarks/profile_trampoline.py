"""Profile the trampoline (and the task it launches) with pyinstrument: ``--out DIR``.

Runs the two-step no-op flow with ``--with nomad`` on a fresh local agent, with
``benchmarks/profile_hook`` on PYTHONPATH so every step process profiles itself
from its first import; the agent gets the same, so the task on Nomad does too.
Needs ``pip install pyinstrument`` (a benchmark-only tool, not a dependency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FLOWS, FlowRunner, env_for_agent

from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent, interpreter_path

HOOK = Path(__file__).resolve().parent / "profile_hook"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the profiles")
    parser.add_argument("--local", action="store_true", help="also profile a plain local run")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    hook_env = {"PYTHONPATH": str(HOOK), "BENCH_PROFILE_DIR": str(args.out.resolve())}
    path = interpreter_path()
    agent = LocalAgent(options=AgentOptions(env={"PATH": path, **hook_env}))
    agent.start()
    try:
        with tempfile.TemporaryDirectory(prefix="mf-nomad-profile-") as tmp:
            runner = FlowRunner(Path(tmp), env_for_agent(agent.address, Path(tmp) / "mfhome"))
            directory = runner.prepare("noop", (FLOWS / "noop_flow.py").read_text())
            if args.local:
                runner.run(directory, [], [], 300, hook_env)
            run = runner.run(directory, ["--with=nomad"], [], 300, hook_env)
            print(f"nomad run: {run.seconds:.2f} s")
    finally:
        agent.stop()
    for profile in sorted(args.out.glob("*.txt")):
        print(f"  {profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
