"""Move ``champion`` to a version, or roll it back, with the reason recorded on the version.

python -m flows.promote --version 3 --reason "beat production A/B"
python -m flows.promote --rollback --reason "regression in production"
"""

from __future__ import annotations

from tasks import settings

settings.configure_environment()

from prefect import flow  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: E402

from tasks.registry import set_champion  # noqa: E402


class PromoteParams(BaseModel):
    """Which version becomes champion (or roll back to the previous one), and why."""

    model_config = ConfigDict(extra="forbid")

    registered_model_name: str = Field("rotten-tomatoes-sentiment", min_length=1)
    version: str | None = Field(None, pattern=r"^\d+$", description="the version to promote")
    rollback: bool = Field(False, description="go back to the champion before the current one")
    reason: str = Field(..., min_length=3, description="recorded on the version (promotion_reason tag)")

    @model_validator(mode="after")
    def _one_target(self) -> PromoteParams:
        if (self.version is None) == (not self.rollback):
            raise ValueError("give either version or rollback=true")
        return self


@flow(name="promote")
def promote(params: PromoteParams) -> dict[str, str]:
    """Set the ``champion`` alias; returns ``{"registered_model", "champion", "reason"}``."""
    champion = set_champion(
        settings.tracking_uri(), params.registered_model_name, params.version, params.reason, params.rollback
    )
    return {"registered_model": params.registered_model_name, "champion": champion, "reason": params.reason}


if __name__ == "__main__":
    import json
    import sys

    from flows.cli import parse_params

    parsed, _ = parse_params(PromoteParams, sys.argv[1:], prog="python -m flows.promote")
    print(json.dumps(promote(parsed), indent=2))
