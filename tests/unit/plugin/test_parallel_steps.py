"""@parallel and its subclasses are known by class, and no longer refused."""

from __future__ import annotations

from metaflow.plugins.parallel_decorator import ParallelDecorator

from metaflow_nomad.plugin.step_settings import check_step, is_parallel_step


class TorchrunLike(ParallelDecorator):
    """A subclass under another name, as @torchrun or metaflow_ray's decorator is."""

    name = "torchrun_like"


class NamedParallel:
    """Not a ParallelDecorator, whatever its name says."""

    name = "parallel"
    attributes: dict = {}


def test_parallel_and_its_subclasses_are_recognised_by_class():
    assert is_parallel_step([ParallelDecorator()])
    assert is_parallel_step([TorchrunLike()])
    assert not is_parallel_step([NamedParallel()])
    assert not is_parallel_step([])


def test_a_parallel_step_passes_the_step_checks():
    check_step("train", [ParallelDecorator(), TorchrunLike()])
