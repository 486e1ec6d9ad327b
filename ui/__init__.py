"""The prediction page: a Streamlit app for people who do not write JSON, a client of the prediction service.

It talks to the service's REST API only (`ui.service`): it never loads a model, never reads training data,
and the API key it sends stays in the server's configuration (CO2_UI_API_KEY, or the first of
CO2_API_KEYS). `co2 ui` runs it (`streamlit run` on `APP`).
"""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).with_name("app.py")
