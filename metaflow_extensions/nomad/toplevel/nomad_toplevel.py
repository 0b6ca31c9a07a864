__mf_extensions__ = "nomad"
__version__ = "0.1.0"
