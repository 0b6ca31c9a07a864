import json

import pytest

from metaflow_nomad.deploy.triggers import (
    EVENT,
    RUN,
    TRIGGERS_META,
    Trigger,
    TriggerError,
    describe,
    describe_events,
    event_triggers,
    finish_trigger,
    parameter_values,
    read_triggers,
    triggers_meta,
    waiting_on_filter,
)


def test_one_event_without_a_mapping_maps_every_parameter_by_name():
    [trigger] = event_triggers([{"name": "data_ready"}], ["alpha", "Greeting"])
    assert trigger == Trigger("data_ready", EVENT, {"alpha": "alpha", "Greeting": "Greeting"})


def test_several_events_keep_only_their_own_mappings():
    triggers = event_triggers(
        [{"name": "a", "parameters": {"ALPHA": "x"}}, {"name": "b"}], ["alpha", "beta"]
    )
    assert triggers == [Trigger("a", EVENT, {"alpha": "x"}), Trigger("b", EVENT, {})]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "bad name"}, "event name 'bad name' is not valid"),
        ({"name": "e", "parameters": {"gamma": "x"}}, "which the flow does not have"),
        ({"name": "e", "parameters": {"alpha": "a.b"}}, "payload field 'a.b'"),
    ],
)
def test_bad_triggers_are_refused_with_what_to_fix(spec, message):
    with pytest.raises(TriggerError, match=message):
        event_triggers([spec], ["alpha"])


def test_finish_events_are_named_like_argo_ones_with_the_project_of_either_side():
    assert finish_trigger({"flow": "Etl"}, {}).name == "metaflow.Etl.end"
    own = {"project_name": "shop", "branch_name": "prod"}
    assert finish_trigger({"flow": "Etl"}, own).name == "metaflow.shop.prod.Etl.end"
    named = {"flow": "Etl", "project": "lake", "branch": "user.ann"}
    assert finish_trigger(named, own) == Trigger("metaflow.lake.user.ann.Etl.end", RUN)
    with pytest.raises(TriggerError, match="without a branch"):
        finish_trigger({"flow": "Etl", "project": "lake"}, {})


def test_runner_meta_round_trips_and_filters_on_whole_names():
    triggers = [Trigger("a.b", EVENT, {"x": "y"}), Trigger("c", EVENT)]
    meta = triggers_meta(triggers)
    assert read_triggers(meta) == triggers
    assert ",a.b," in meta["metaflow.trigger_events"]
    assert waiting_on_filter("c") == 'Meta["metaflow.trigger_events"] contains ",c,"'
    assert triggers_meta([]) == {} and read_triggers({}) == []


def test_payload_values_become_the_strings_a_user_would_type():
    triggers = [Trigger("a", EVENT, {"n": "count", "opts": "opts", "s": "s", "gone": "nope"})]
    events = [{"name": "a", "payload": {"count": 3, "opts": {"k": [1]}, "s": "hi", "x": 1}}]
    assert parameter_values(triggers, events) == {"n": "3", "opts": '{"k": [1]}', "s": "hi"}


def test_what_started_a_run_is_described_from_its_dispatch_meta():
    events = [
        {"name": "metaflow.Etl.end", "id": "Etl/nomad-dispatch-1-ab/end/3", "type": RUN},
        {"name": "ready", "id": "u-1", "type": EVENT},
    ]
    meta = {TRIGGERS_META: json.dumps(events)}
    assert describe_events(meta) == "run Etl/nomad-dispatch-1-ab, event ready"
    assert describe_events({}) == ""
    assert describe([Trigger("a"), Trigger("b")]) == "all of the events a, b"
