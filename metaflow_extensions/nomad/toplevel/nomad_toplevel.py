__mf_extensions__ = "nomad"
from metaflow_nomad import __version__  # noqa: F401 - the extension's version, one place
