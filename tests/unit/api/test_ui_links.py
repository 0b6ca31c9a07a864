"""api.ui_links: the allocation and job pages of Nomad's UI."""

from __future__ import annotations

import pytest

from metaflow_nomad.api.ui_links import allocation_url, job_url, ui_base_url

ALLOC = "9be8fe29-8346-d5ec-90f4-5db8904ae8ca"
EXPORTED = {"METAFLOW_NOMAD_PROFILE_EXPORTED": "1"}


def test_the_ui_is_on_the_api_address_by_default():
    assert ui_base_url("http://10.0.0.5:4646", EXPORTED) == "http://10.0.0.5:4646"


@pytest.mark.parametrize(
    "setting",
    ["https://nomad.example.com", "https://nomad.example.com/", "https://nomad.example.com/ui/"],
)
def test_the_setting_names_another_base(setting):
    environ = {**EXPORTED, "METAFLOW_NOMAD_UI_URL": setting}
    assert ui_base_url("http://10.0.0.5:4646", environ) == "https://nomad.example.com"


def test_an_allocation_page_names_a_namespace_other_than_default():
    base = "https://nomad.example.com"
    assert allocation_url(base, ALLOC) == f"{base}/ui/allocations/{ALLOC}"
    assert allocation_url(base, ALLOC, "default") == f"{base}/ui/allocations/{ALLOC}"
    assert allocation_url(base, ALLOC, "team a") == (
        f"{base}/ui/allocations/{ALLOC}?namespace=team+a"
    )


def test_a_job_page_is_its_id_at_its_namespace():
    base = "http://127.0.0.1:4646"
    assert job_url(base, "mf-flow-1-start-1-0") == f"{base}/ui/jobs/mf-flow-1-start-1-0@default"
    assert job_url(base, "a/dispatch-1", "team-a") == f"{base}/ui/jobs/a%2Fdispatch-1@team-a"
