from tests.pipeline_fixtures import pipeline_home, real_csv, tiny_checkpoint  # noqa: F401
