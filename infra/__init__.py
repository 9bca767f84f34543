"""Local servers (Prefect server + worker, MLflow server) for the pipeline; see infra/README.md."""
