"""Test support: a real local Nomad agent, test PKI and a private Docker engine.

Importable by tests, the demo and the benchmarks; never shipped in a code package.
"""
