"""metaflow-nomad: run Metaflow steps on HashiCorp Nomad."""

__version__ = "0.1.0"
