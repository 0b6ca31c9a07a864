"""The demo: start a local Nomad agent, run the example flows on it, show the jobs.

Run it with `make demo`.  The flows' @nomad steps run as real docker tasks, in
the offline-built ``python:3.11`` image on a private Docker engine, with the
local datastore bind-mounted into each container.  Only where no engine can be
started does the demo fall back to the raw_exec driver, and it says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from metaflow_nomad.testing.docker_engine import start_engine_or_explain
from metaflow_nomad.testing.local_agent import AgentOptions, LocalAgent, interpreter_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOWS = ["nomad_flow.py", "foreach_flow.py"]


def main() -> int:
    path = interpreter_path()
    engine = start_engine_or_explain(lambda m: print(m, flush=True))
    plugin = engine.nomad_plugin_config() if engine else ""
    agent = LocalAgent(options=AgentOptions(env={"PATH": path}, docker_plugin=plugin))
    print(f"Starting a local Nomad agent ({agent.binary})...", flush=True)
    failed = 0
    try:
        agent.start()
        print(f"Nomad agent ready at {agent.address}", flush=True)
        workdir = Path(tempfile.mkdtemp(prefix="mf-nomad-demo-"))
        env = dict(os.environ)
        env.update(
            {
                "METAFLOW_NOMAD_ADDRESS": agent.address,
                "METAFLOW_NOMAD_DRIVER": "docker" if engine else "raw_exec",
                "METAFLOW_NOMAD_SHARED_FILESYSTEM": "1",
                "PATH": path,
                "USER": os.environ.get("USER", "demo"),
            }
        )
        if engine:
            # The containers reach the agent on loopback.
            env["METAFLOW_NOMAD_NETWORK_MODE"] = "host"
            print(f"Steps run as docker tasks on the engine at {engine.endpoint}.", flush=True)
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
        for stub in jobs:
            meta = stub.get("Meta") or {}
            with urllib.request.urlopen(f"{agent.address}/v1/job/{stub['ID']}") as response:
                task = json.load(response)["TaskGroups"][0]["Tasks"][0]
            image = f" image={task['Config'].get('image')}" if task["Driver"] == "docker" else ""
            print(
                f"  {stub['ID']}  status={stub['Status']}  driver={task['Driver']}{image}  "
                f"step={meta.get('metaflow.step_name')}"
            )
    finally:
        agent.stop()
        print("Nomad agent stopped.")
        if engine:
            engine.stop()
            print("Docker engine stopped.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
