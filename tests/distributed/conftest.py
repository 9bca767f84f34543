import pytest

from tests.pipeline_fixtures import pipeline_home, real_csv, tiny_checkpoint  # noqa: F401


@pytest.fixture(scope="module")
def prefect_server():
    """A Prefect test server for the module's flow run (Prefect's own harness)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
