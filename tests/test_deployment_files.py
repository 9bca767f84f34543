"""The deployment files say what runs: the Prefect version installed, the schedule's zone in its description."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_prefect_version_named_is_the_one_installed():
    import prefect

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    assert str(spec["prefect-version"]) == prefect.__version__
    image = (ROOT / "infra" / "production" / "prefect-server.yaml").read_text()
    assert f"prefecthq/prefect:{prefect.__version__}-python3.11" in image


def test_a_scheduled_deployment_names_its_time_zone_where_the_ui_shows_it():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    scheduled = [d for d in spec["deployments"] if d.get("schedules")]
    assert scheduled
    for deployment in scheduled:
        for schedule in deployment["schedules"]:
            assert schedule["timezone"] in deployment["description"]  # the run list shows the browser's zone


def test_every_deployment_is_bounded_by_a_limit_the_server_takes_atomically():
    """A deployment concurrency limit (queued past it) on every deployment, the pool limit's default as default."""
    from infra import servers

    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        limit = deployment["concurrency_limit"]
        assert (limit["limit"], limit["collision_strategy"]) == (servers.Config.pool_limit, "ENQUEUE"), deployment[
            "name"
        ]
        assert deployment["work_pool"]["name"] == servers.Config.work_pool


def test_a_deployments_file_prefect_refuses_fails_deploy_naming_the_file(tmp_path):
    """``infra.servers deploy`` stops at a file ``prefect deploy`` refuses, naming it and quoting Prefect's reason."""
    from infra import servers

    broken = tmp_path / "prefect.yaml"
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    spec["deployments"][0]["concurrency_limit"] = {"limit": "two"}  # not a number
    broken.write_text(yaml.safe_dump(spec))
    config = servers.Config(home=tmp_path / "home", prefect_port=9)  # nothing listens there: never reached
    with pytest.raises(servers.ServerError) as failed:
        servers.deploy(config, prefect_file=broken, log=lambda _: None)
    assert str(broken) in str(failed.value) and "concurrency_limit" in str(failed.value), failed.value
