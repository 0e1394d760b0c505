"""`search.budget:` the search's budget in the units people pay (orchestrator.core.budget does the accounting)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from orchestrator.core.config_data import _Section

DEVICE_HOURS_NOTE = (
    "A trial's spend is its devices x its wall time (Tune's time_total_s): devices are num_workers x "
    "gpus_per_worker (its planned share with gpus_per_worker auto); on CPU-only trials (gpus_per_worker 0) "
    "each Train worker counts as one device, so GPU-hours are worker-hours there."
)


class BudgetConfig(_Section):
    """`search.budget:` exactly one of gpu_hours or usd."""

    gpu_hours: Optional[float] = Field(
        None, gt=0, description=f"Budget in GPU-hours over all trials. {DEVICE_HOURS_NOTE}"
    )
    usd: Optional[float] = Field(
        None,
        gt=0,
        description="Budget in dollars over all trials: GPU-hours x resources.price_per_gpu_hour (which it requires).",
    )

    @model_validator(mode="after")
    def _exactly_one(self):
        if (self.gpu_hours is None) == (self.usd is None):
            raise ValueError("give exactly one of gpu_hours or usd (e.g. {gpu_hours: 10} or {usd: 25})")
        return self
