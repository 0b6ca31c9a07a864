"""What a step's settings become for its task, given the datastore and the package cache."""

from __future__ import annotations

from types import SimpleNamespace

from metaflow_nomad.render.code_package import PACKAGE_CACHE_ENV
from metaflow_nomad.render.pipeline import task_settings
from metaflow_nomad.settings import resolve_step_settings

S3 = SimpleNamespace(TYPE="s3", datastore_root="s3://bucket/mf")
LOCAL = SimpleNamespace(TYPE="local", datastore_root="/shared/.metaflow")


def _settings(**nomad):
    return resolve_step_settings("train", nomad, python_version=(3, 11))


def test_a_docker_step_mounts_the_package_cache_and_tells_its_bootstrap_where_it_is():
    settings = task_settings(
        _settings(driver="docker", package_cache="/var/cache/mf/", volumes=["/d:/d"]), S3
    )
    assert settings.docker.volumes == ("/d:/d", "/var/cache/mf:/var/cache/mf")
    assert settings.env[PACKAGE_CACHE_ENV] == "/var/cache/mf"


def test_a_raw_exec_step_only_gets_the_path():
    settings = task_settings(_settings(driver="raw_exec", package_cache="/var/cache/mf"), S3)
    assert settings.docker is None
    assert settings.env == {PACKAGE_CACHE_ENV: "/var/cache/mf"}


def test_the_shared_datastore_and_the_cache_are_both_mounted_once():
    settings = _settings(driver="docker", package_cache="/var/cache/mf")
    settings = task_settings(task_settings(settings, LOCAL), LOCAL)
    assert settings.docker.volumes == (
        "/shared/.metaflow:/shared/.metaflow",
        "/var/cache/mf:/var/cache/mf",
    )


def test_without_a_cache_nothing_is_added():
    settings = _settings(driver="docker")
    assert task_settings(settings, S3) == settings
    assert PACKAGE_CACHE_ENV not in settings.env
