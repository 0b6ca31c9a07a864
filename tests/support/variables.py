"""A stub of the one client call doctor's Variable checks make (``blocking_get`` of
``var/<path>``), for unit tests of pure check logic: it answers from a dict, or raises
the error it was given, and records what it was asked."""

from __future__ import annotations


class Variables:
    def __init__(self, answer):
        self.answer = answer
        self.asked = []

    def blocking_get(self, path, params=None):
        self.asked.append((path, params))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer, 7
