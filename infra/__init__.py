"""The servers of the pipeline (Prefect server and workers, MLflow server; SQLite or, in cluster mode, PostgreSQL),
started and stopped on loopback; see infra/README.md."""
