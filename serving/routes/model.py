"""What is being served."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from serving.deps import CurrentModel, SettingsDep, require_api_key
from serving.schemas import ModelInfo

# what is served, and what it was trained on, is for the service's clients only
router = APIRouter(tags=["model"], dependencies=[Depends(require_api_key)])


@router.get("/model", response_model=ModelInfo)
async def model_info(model: CurrentModel, settings: SettingsDep) -> ModelInfo:
    """The production model: version, run, metrics, training lineage (URLs without credentials), training cars' CO2."""
    return ModelInfo(
        model_name=model.name,
        model_version=model.version,
        run_id=model.run_id,
        alias=settings.model_alias,
        loaded_at=model.loaded_at.isoformat(),
        metrics=model.metrics,
        lineage=model.lineage,
        input_ranges=model.input_ranges,
        training_summary=model.training_summary,
    )
