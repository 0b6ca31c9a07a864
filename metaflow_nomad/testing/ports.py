"""Free loopback ports for test servers (Nomad agents, S3, a second client node).

The ports come from a band below both the kernel's ephemeral range (32768-60999 by
default, where every outgoing connection takes its local port) and Nomad's dynamic
task ports (20000-32000).  A port picked from the ephemeral range is free only for
an instant: between the check and the server's bind, any outgoing connection of the
suite (a launcher's keep-alive to an agent, a boto call to S3) can take it as its own
local port, and the agent then dies with "address already in use".  Nothing takes a
port from this band unless it asks for that number.

When pytest-xdist runs the suite in several worker processes, each worker takes its
own slice of the band: workers do not see each other's handed-out ports, and two of
them must not pick the same free port for two servers.
"""

from __future__ import annotations

import os
import random
import socket

WHOLE_BAND = range(15000, 20000)


def worker_band(worker: str | None, workers: str | None) -> range:
    """This process's slice of ``WHOLE_BAND``: all of it outside pytest-xdist, else the
    slice of worker ``gwN`` out of ``workers``."""
    if not worker or not workers:
        return WHOLE_BAND
    index, count = int(worker.removeprefix("gw")), int(workers)
    size = len(WHOLE_BAND) // count
    low = WHOLE_BAND.start + index * size
    return range(low, low + size)


PORT_BAND = worker_band(
    os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
)

# Ports handed out by this process: a caller asking for three ports gets three,
# even before it binds any of them.
_handed_out: set[int] = set()


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and no connection uses."""
    candidates = [port for port in PORT_BAND if port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        if _is_free(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {PORT_BAND.start}-{PORT_BAND.stop - 1}")
