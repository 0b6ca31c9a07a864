"""The demo: start a local Nomad agent, run the example flows on it, show the jobs.

Run it with `make demo`.  The flows run with the raw_exec driver on the local
agent and the local datastore (which the agent's tasks share with this machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent, interpreter_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOWS = ["nomad_flow.py", "foreach_flow.py"]


def main() -> int:
    path = interpreter_path()
    agent = LocalAgent(options=AgentOptions(env={"PATH": path}))
    print(f"Starting a local Nomad agent ({agent.binary})...", flush=True)
    agent.start()
    print(f"Nomad agent ready at {agent.address}", flush=True)
    failed = 0
    try:
        workdir = Path(tempfile.mkdtemp(prefix="mf-nomad-demo-"))
        env = dict(os.environ)
        env.update(
            {
                "METAFLOW_NOMAD_ADDRESS": agent.address,
                "METAFLOW_NOMAD_DRIVER": "raw_exec",
                "METAFLOW_NOMAD_SHARED_FILESYSTEM": "1",
                "PATH": path,
                "USER": os.environ.get("USER", "demo"),
            }
        )
        for flow in FLOWS:
            print(f"\n=== python {flow} run ===", flush=True)
            (workdir / flow).write_text((EXAMPLES / flow).read_text())
            code = subprocess.call(
                [sys.executable, flow, "--no-pylint", "run"], cwd=workdir, env=env
            )
            failed += code != 0
        with urllib.request.urlopen(agent.address + "/v1/jobs?meta=true") as response:
            jobs = json.load(response)
        print("\nNomad jobs submitted by the demo (read back from the Nomad API):")
        for job in jobs:
            meta = job.get("Meta") or {}
            print(
                f"  {job['ID']}  status={job['Status']}  "
                f"step={meta.get('metaflow.step_name')}  template={meta.get('metaflow.template')}"
            )
    finally:
        agent.stop()
        print("Nomad agent stopped.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
