"""Prefect flows of the retraining pipeline (one pydantic parameter model per flow)."""
