"""The page's sections: one car, many cars (a CSV), the model in production; and what it says when the
prediction service cannot answer. Each talks to the service through `ui.service` only."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import streamlit as st

from co2_model import columns as col
from co2_model.inputs import EXAMPLE_CAR, MEASURED, MeasuredInput
from co2_model.vocabulary import FUEL_MODES, FUEL_TYPES, MAKE_ALIASES, normalise_fuel_type, normalise_make
from ui import batch, distribution
from ui.report import report_figures
from ui.service import PredictionService, Refused, ServiceUnavailable
from ui.wording import explain, method_in_words

NOT_GIVEN = "(not given)"
EEA_COLUMN = {domain: source for source, domain in col.SOURCE_TO_DOMAIN.items()}  # mass_kg -> M (kg)
BASIC_NUMBERS = [name for name in col.BASIC_INPUT_COLUMNS if name in MEASURED]
MORE_NUMBERS = [name for name in MEASURED if name not in BASIC_NUMBERS]
# the spellings the EEA data uses for each make (co2_model.vocabulary), shown next to the make's name
SPELLINGS: dict[str, list[str]] = {}
for spelling, make in MAKE_ALIASES.items():
    SPELLINGS.setdefault(make, []).append(spelling)


# --- the service ---------------------------------------------------------------------------------
def model_or_stop(service: PredictionService) -> dict[str, Any]:
    """The production model as GET /model gives it; when the service cannot answer, a plain message and
    nothing more of the page."""
    try:
        readiness = service.readiness()
        if readiness.model_version is None:
            reasons = "; ".join(readiness.reasons) or "it has no model yet"
            st.error(
                f"The prediction service is not ready: {reasons}. It answers once a model version is in "
                "production (run the retraining DAG, e.g. `co2 trigger`); reload this page then."
            )
            st.stop()
        if not readiness.ready:
            st.warning(
                f"The prediction service answers with version {readiness.model_version}, but "
                + "; ".join(readiness.reasons)
                + ". A newer version may be in production already."
            )
        return service.model()
    except ServiceUnavailable as exc:
        st.error(str(exc))
        st.stop()  # ends this run of the script: nothing more of the page


def _training_years(model: dict[str, Any]) -> str:
    years = [year for year in str(model.get("lineage", {}).get("years", "")).split(",") if year.strip()]
    return f"{years[0]}–{years[-1]}" if len(years) > 1 else "".join(years)


# --- one car -------------------------------------------------------------------------------------
def _label(declared: MeasuredInput) -> str:
    return f"{declared.description}, {declared.unit}"


def _number(name: str) -> float | None:
    declared = MEASURED[name]
    fine = declared.maximum <= 100  # l/100 km, g/km: tenths matter
    default = EXAMPLE_CAR.get(name)
    return st.number_input(
        _label(declared),
        min_value=float(declared.minimum),
        max_value=float(declared.maximum),
        value=float(default) if default is not None else None,
        step=0.1 if fine else 1.0,
        format="%.1f" if fine else "%.0f",
        key=f"car.{name}",
        placeholder="not given",
        help=f"`{name}` (EEA column `{declared.eea_column}`): {declared.minimum:g} to {declared.maximum:g} "
        f"{declared.unit}. Leave empty if you do not know it.",
    )


def _make_options(model: dict[str, Any]) -> list[str]:
    """The makes the model was trained on, most registered first, then the other makes the EEA's spellings know."""
    trained = list((model.get("training_summary") or {}).get("makes") or [])
    known = sorted(set(MAKE_ALIASES.values()) - set(trained))
    return [NOT_GIVEN, *trained, *known]


def _make_label(make: str) -> str:
    spellings = SPELLINGS.get(make)
    return f"{make} (also {', '.join(spellings)})" if spellings else make


def one_car(service: PredictionService, model: dict[str, Any]) -> None:
    st.subheader("One car")
    st.caption("Its technical data as in its papers or the EEA data; only the fuel type is required.")
    with st.form("car"):
        left, middle, right = st.columns(3)
        with left:
            fuel_type = st.selectbox(
                "Fuel type",
                FUEL_TYPES,
                index=FUEL_TYPES.index(normalise_fuel_type(EXAMPLE_CAR["fuel_type"]) or FUEL_TYPES[0]),
                key="car.fuel_type",
                help=f"`fuel_type` (EEA column `{EEA_COLUMN['fuel_type']}`), in the EEA's vocabulary",
            )
            makes = _make_options(model)
            example_make = normalise_make(EXAMPLE_CAR["make"])
            make = st.selectbox(
                "Make",
                makes,
                index=makes.index(example_make) if example_make in makes else 0,
                format_func=_make_label,
                accept_new_options=True,
                key="car.make",
                help=f"`make` (EEA column `{EEA_COLUMN['make']}`): choose one, or type it in any spelling the EEA "
                "uses (VW, Škoda, ...)",
            )
        numbers: dict[str, float | None] = {}
        for index, name in enumerate(BASIC_NUMBERS):
            with (middle, right, left)[index % 3]:
                numbers[name] = _number(name)
        with st.expander("Fuel mode, electric figures, test mass and dimensions (optional)"):
            fuel_mode = st.selectbox(
                "Fuel mode",
                [NOT_GIVEN, *FUEL_MODES],
                format_func=lambda mode: mode if mode == NOT_GIVEN else f"{mode}: {FUEL_MODES[mode]}",
                key="car.fuel_mode",
                help=f"`fuel_mode` (EEA column `{EEA_COLUMN['fuel_mode']}`). A hybrid needs it, or its fuel "
                "consumption or electric range.",
            )
            columns = st.columns(3)
            for index, name in enumerate(MORE_NUMBERS):
                with columns[index % 3]:
                    numbers[name] = _number(name)
        submitted = st.form_submit_button("Predict CO₂", type="primary", key="car.predict")
    if submitted:
        car: dict[str, Any] = {"fuel_type": fuel_type, **{k: v for k, v in numbers.items() if v is not None}}
        if make and make != NOT_GIVEN:
            car["make"] = make
        if fuel_mode != NOT_GIVEN:
            car["fuel_mode"] = fuel_mode
        try:
            st.session_state["car.result"] = (car, service.predict(car))
        except ServiceUnavailable as exc:
            st.session_state.pop("car.result", None)
            st.error(str(exc))
    if "car.result" in st.session_state:
        car, result = st.session_state["car.result"]
        _show_answer(car, result, model)


def _show_answer(car: dict[str, Any], result: dict[str, Any] | Refused, model: dict[str, Any]) -> None:
    if isinstance(result, Refused):
        st.error(
            "The service cannot answer for this car:\n\n" + "\n".join(f"- {explain(e, car)}" for e in result.errors)
        )
        return
    co2 = float(result["co2_wltp_g_km"])
    answer, where = st.columns([1, 2])
    with answer:
        st.metric("WLTP CO₂", f"{co2:.1f} g/km")
        lower, upper = result.get("co2_lower_g_km"), result.get("co2_upper_g_km")
        if lower is not None and upper is not None and upper > lower:
            st.markdown(f"Nine cars in ten like this one emit between **{lower:.1f}** and **{upper:.1f} g/km**.")
        st.caption(
            f"{method_in_words(str(result['method']))}. "
            f"Answered by {result['model_name']} version {result['model_version']}."
        )
    with where:
        fuel_type = normalise_fuel_type(car["fuel_type"]) or ""
        by_fuel = (model.get("training_summary") or {}).get("co2_wltp_g_km_by_fuel_type") or {}
        if fuel_type in by_fuel:
            st.markdown(distribution.position(fuel_type, by_fuel[fuel_type], co2, _training_years(model)))
            st.altair_chart(distribution.chart(fuel_type, by_fuel[fuel_type], co2), width="stretch")
        elif by_fuel:
            st.info(f"The model was trained on no {fuel_type} cars: there is nothing to compare this car with.")
        else:
            st.info(
                f"Model version {model['model_version']} does not say how its training cars' CO₂ was spread "
                "(it was trained before versions recorded it)."
            )


# --- many cars -----------------------------------------------------------------------------------
def many_cars(service: PredictionService) -> None:
    st.subheader("Many cars")
    st.markdown(
        "A CSV file with a header row and one car per row. Columns: the service's field names "
        f"({', '.join(f'`{name}`' for name in col.MODEL_INPUT_COLUMNS)}) or the EEA's column names "
        f"({', '.join(f'`{EEA_COLUMN[name]}`' for name in col.MODEL_INPUT_COLUMNS)}); "
        f"`fuel_type` (`{EEA_COLUMN['fuel_type']}`) is required, any other may be left out or empty."
    )
    st.download_button(
        "A CSV to start from", batch.template(), file_name="cars.csv", mime="text/csv", key="csv.template"
    )
    uploaded = st.file_uploader("CSV file", type=["csv"], key="csv.file")
    if uploaded is None:
        return
    content = uploaded.getvalue()
    digest = hashlib.sha256(content).hexdigest()
    if st.session_state.get("csv.digest") != digest:  # each upload is sent once, not at every rerun
        try:
            st.session_state["csv.outcome"] = batch.predict_rows(service, content, uploaded.name)
            st.session_state["csv.digest"] = digest
        except ServiceUnavailable as exc:
            st.error(str(exc))
            return
    outcome: batch.BatchOutcome = st.session_state["csv.outcome"]
    if outcome.table is None:
        st.error("The service cannot read this file as cars:\n\n" + "\n".join(f"- {p}" for p in outcome.problems))
        return
    rows = len(outcome.table)
    st.success(
        f"{outcome.answered} of {rows} cars answered"
        + (f" by model version {outcome.model_version}." if outcome.model_version else ".")
    )
    if outcome.problems:
        shown = outcome.problems[:50]
        more = (
            f"\n\n… and {len(outcome.problems) - len(shown)} more, in the table's `problem` column."
            if len(outcome.problems) > len(shown)
            else ""
        )
        st.error(
            f"{rows - outcome.answered} rows could not be answered:\n\n" + "\n".join(f"- {p}" for p in shown) + more
        )
    st.dataframe(outcome.table, hide_index=True, key="csv.table")
    st.download_button(
        "Download the answers (CSV)",
        outcome.csv(),
        file_name=f"{uploaded.name.removesuffix('.csv')}-co2.csv",
        mime="text/csv",
        key="csv.download",
    )


# --- the model -----------------------------------------------------------------------------------
@st.cache_data(ttl=600, max_entries=8, show_spinner="Reading the run report from MLflow…")
def _report(mlflow_url: str, run_id: str) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    return report_figures(mlflow_url, run_id)


def the_model(model: dict[str, Any], mlflow_url: str, report_mlflow_url: str) -> None:
    """`mlflow_url` as readers' browsers reach MLflow (links); `report_mlflow_url` as this server does."""
    st.subheader(f"{model['model_name']} version {model['model_version']}")
    st.markdown(
        f"The version under the alias `{model['alias']}`, which the service has served since {model['loaded_at']}."
    )
    metrics = model.get("metrics") or {}
    cards = st.columns(3)
    for card, (name, label, unit) in zip(
        cards,
        (
            ("mae_g_km", "Mean absolute error", " g/km"),
            ("rmse_g_km", "Root mean squared error", " g/km"),
            ("r2", "R²", ""),
        ),
        strict=True,
    ):
        if name in metrics:
            card.metric(label, f"{metrics[name]:g}{unit}", help=f"`{name}` on the leak-free test split")
    others = {name: value for name, value in metrics.items() if name not in ("mae_g_km", "rmse_g_km", "r2")}
    if others:
        st.caption(
            "Per registration year (`mae_g_km.year.*`), and a year ahead (`backtest_*`: "
            "the same model fit without the newest year, scored on it)"
        )
        st.dataframe(pd.DataFrame({"metric": list(others), "value": list(others.values())}), hide_index=True)

    lineage = model.get("lineage") or {}
    st.markdown("**Training window**")
    facts = {
        "registration years": ", ".join(year for year in lineage.get("years", "").split(",") if year),
        "EEA tables": ", ".join(json.loads(lineage["eea_tables"]).values()) if lineage.get("eea_tables") else "",
        "table names from": lineage.get("eea_tables_from", ""),
        "generated tables (not EEA data)": lineage.get("generated_tables", ""),
        "source": lineage.get("source_url", ""),
        "candidate": lineage.get("candidate", ""),
        **{name: value for name, value in lineage.items() if name.endswith("sha256")},
    }
    st.dataframe(
        pd.DataFrame({"what": list(facts), "value": list(facts.values())})[lambda t: t["value"] != ""],
        hide_index=True,
    )
    run_id = model.get("run_id")
    if run_id:
        st.markdown(
            f"**Run report**: the training run `{run_id}` in MLflow holds the whole report (`report/report.html` "
            "in the run's artifacts), every metric and the data it was trained on."
        )
        st.link_button("Open the run in MLflow", f"{mlflow_url.rstrip('/')}/#/runs/{run_id}")
        figures, summary = _report(report_mlflow_url, run_id)
        if summary.get("reason"):
            st.markdown(f"**Why this version**: {summary['reason']}")
        for caption, png in figures:
            st.image(png, caption=caption)
        if not figures:
            st.caption("This version's run has no report figures to show (it may predate run reports).")

    by_fuel = (model.get("training_summary") or {}).get("co2_wltp_g_km_by_fuel_type") or {}
    if by_fuel:
        st.markdown("**Training cars' WLTP CO₂ by fuel type** (weighted by registrations, g/km)")
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "fuel type": fuel_type,
                        "registrations": summary["registrations"],
                        "10 %": summary["percentiles_g_km"][10],
                        "median": summary["percentiles_g_km"][50],
                        "90 %": summary["percentiles_g_km"][90],
                    }
                    for fuel_type, summary in sorted(by_fuel.items(), key=lambda item: -item[1]["registrations"])
                ]
            ),
            hide_index=True,
        )
    ranges = model.get("input_ranges") or {}
    if ranges:
        with st.expander("Inputs the model has seen (0.1 % to 99.9 % of its training cars)"):
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "input": name,
                            "from": low,
                            "to": high,
                            "unit": MEASURED[name].unit if name in MEASURED else "",
                        }
                        for name, (low, high) in ranges.items()
                    ]
                ),
                hide_index=True,
            )
