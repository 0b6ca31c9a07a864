"""Code that runs inside the Nomad task, next to the step (shipped in the code package)."""
