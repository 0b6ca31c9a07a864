"""Render a run's step job the way the plugin does, from loose test inputs."""

from __future__ import annotations

from metaflow_nomad.render.inputs import RenderInputs
from metaflow_nomad.render.jobspec import RenderedJob, render_job, step_request

MTLS_ADDRESS = "https://127.0.0.1:4646"


def render_inputs(flow_dir=None, tls_dir=None, values=None, address=MTLS_ADDRESS) -> RenderInputs:
    """Inputs as the plugin builds them; ``tls_dir`` makes the cluster an mTLS one."""
    return RenderInputs(
        flow_dir=None if flow_dir is None else str(flow_dir),
        task_tls_dir=tls_dir,
        mtls_address=address if tls_dir else None,
        values=dict(values or {}),
    )


def render_step(settings, identity, launch, flow_dir=None, **inputs) -> RenderedJob:
    """A run's job for one attempt: ``inputs`` are ``render_inputs``'s keywords."""
    return render_job(step_request(settings, identity, launch), render_inputs(flow_dir, **inputs))
