"""AutoscaleRepository: autoscale settings in the store (SQLite and PostgreSQL), as A1's engine reads them."""

from __future__ import annotations

import threading

import pytest

from tiffin.autoscale.monitor import profile_spec, rule_spec
from tiffin.errors import ConflictError, NotFoundError


def spec() -> dict:
    return {"enabled": True, "profiles": [profile_spec("default", minimum=1, maximum=3, default=1)]}


@pytest.fixture()
def deployed(store):
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {"instance_count": 1})
    store.create_endpoint("batch", "bep", {})
    store.put_deployment("bep", "job", "batch", {})
    return store


def test_create_get_list_delete(deployed) -> None:
    created = deployed.create_autoscale_setting("s", "ep", "blue", spec())
    assert (created.name, created.spec["name"], created.target_exists) == ("s", "s", True)
    assert deployed.get_autoscale_setting("s").spec["profiles"][0]["capacity"]["maximum"] == "3"
    assert [r.name for r in deployed.list_autoscale_settings()] == ["s"]
    assert deployed.list_autoscale_settings("ep", "blue")[0].deployment_name == "blue"
    assert deployed.list_autoscale_settings("other") == []
    with pytest.raises(ConflictError, match="exists"):
        deployed.create_autoscale_setting("s", "ep", "blue", spec())
    replaced = deployed.create_autoscale_setting("s", "ep", "blue", {**spec(), "enabled": False}, replace=True)
    assert replaced.spec["enabled"] is False
    deployed.delete_autoscale_setting("s")
    with pytest.raises(NotFoundError, match="tiffin monitor autoscale list"):
        deployed.get_autoscale_setting("s")
    with pytest.raises(NotFoundError):
        deployed.delete_autoscale_setting("s")


def test_target_must_be_an_existing_online_deployment_with_no_other_setting(deployed) -> None:
    with pytest.raises(NotFoundError, match="online deployment 'red'"):
        deployed.create_autoscale_setting("s", "ep", "red", spec())
    with pytest.raises(NotFoundError, match="online deployment 'job'"):
        deployed.create_autoscale_setting("s", "bep", "job", spec())
    deployed.create_autoscale_setting("s", "ep", "blue", spec())
    with pytest.raises(ConflictError, match="already has autoscale setting 's'"):
        deployed.create_autoscale_setting("t", "ep", "blue", spec())


def test_modify_applies_changes_made_in_place_and_concurrent_ones_all_land(deployed) -> None:
    deployed.create_autoscale_setting("s", "ep", "blue", spec())
    rule = rule_spec("RequestsPerMinute > 10 avg 1m", "out 1")

    def add_rule(value: dict) -> dict:
        value["profiles"][0]["rules"].append(rule)  # in place, as the API's handlers do
        return value

    threads = [threading.Thread(target=deployed.modify_autoscale_setting, args=("s", add_rule)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(deployed.get_autoscale_setting("s").spec["profiles"][0]["rules"]) == 4

    def refuse(value: dict) -> dict:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        deployed.modify_autoscale_setting("s", refuse)
    assert len(deployed.get_autoscale_setting("s").spec["profiles"][0]["rules"]) == 4


def test_a_deleted_target_leaves_the_setting_reported_missing(deployed) -> None:
    deployed.create_autoscale_setting("s", "ep", "blue", spec())
    deployed.delete_deployment("ep", "blue")
    assert deployed.get_autoscale_setting("s").target_exists is False
    deployed.put_deployment("ep", "blue", "online", {})  # the same name again: the setting applies again
    assert deployed.list_autoscale_settings()[0].target_exists is True
    deployed.delete_endpoint("ep")
    (orphan,) = deployed.list_autoscale_settings()
    assert (orphan.name, orphan.target_exists) == ("s", False)
