"""The prediction page: WLTP CO₂ of one car from a form, of many from a CSV, and the model in production.

Run by `co2 ui` (`streamlit run` on this file, headless); a client of the prediction service's REST API
(CO2_UI_API_URL), whose API key stays here, server-side.
"""

from __future__ import annotations

import streamlit as st

from co2.settings import get_settings
from ui import views
from ui.service import PredictionService


def main() -> None:
    st.set_page_config(page_title="CO₂ of new cars", layout="wide")
    settings = get_settings()
    service = PredictionService.from_settings(settings)
    st.title("CO₂ emissions of new cars")
    st.caption(
        "WLTP CO₂ in g/km, as the model in production predicts it from a car's technical data "
        "(trained on the EEA's monitoring data of new cars registered in Europe)."
    )
    model = views.model_or_stop(service)
    one, many, about = st.tabs(["One car", "Many cars", "The model"])
    with one:
        views.one_car(service, model)
    with many:
        views.many_cars(service)
    with about:
        views.the_model(model, settings.ui_mlflow_url or settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


main()
