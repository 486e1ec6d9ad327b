"""Benchmark: from moving the `production` alias to the prediction service answering with that version.

An MLflow server (SQLite backend, which has webhooks) and the prediction service (`co2 serve`, default
settings: a poll every 30 s), both local processes. Two versions of a RandomForest with the make,
trained on the real sample grown to three years' worth of configurations (the size the platform's
forest reaches, ~47 MB as skops), are promoted in turn: each promotion is timed from the alias call
to the service's /ready naming the new version, and the service's log says where its load went
(download, deserialisation with the trust checks, self-check).

Baseline, measured in the same run: the same service without the webhook, learning of promotions by
its poll (fewer promotions: each waits up to a poll interval). Target: under 3 s at the default
settings, a load in under 1 s.

    python bench/promotion_to_served.py [--promotions 20] [--baseline-promotions 4]
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2 import local  # noqa: E402

CO2 = str(Path(sys.executable).parent / "co2")
SAMPLE = PROJECT_DIR / "data" / "sample" / "co2cars_2021_sample.csv"
MODEL = "co2-emissions"
PHASES = ("load_seconds", "download_seconds", "deserialize_seconds", "check_seconds")


def train_versions(mlflow_url: str, home: Path) -> list[str]:
    """Two forests (seeds 1 and 2) on the sample grown to three years, registered: their versions."""
    import mlflow
    import pandas as pd

    from co2.mlflow_utils import log_model
    from co2.pipeline.preprocess import preprocess
    from co2_model import columns as col
    from co2_model.model import build_model, fit

    raw = pd.read_csv(SAMPLE)
    present = [name for name in col.SOURCE_TO_DOMAIN if name in raw.columns]
    raw = raw[raw["Ewltp (g/km)"].notna()][present].assign(**{col.COUNT_ALIAS: 1, "Year": 2021})
    raw.to_parquet(home / "sample.parquet")
    train = pd.read_parquet(
        preprocess(home / "sample.parquet", home / "processed", test_fraction=0.2, split_salt="co2").train_path
    )
    grown = pd.concat([train.assign(mass_kg=train["mass_kg"] * (1 + 0.01 * i)) for i in range(3)], ignore_index=True)
    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_registry_uri(mlflow_url)
    versions = []
    for seed in (1, 2):
        model = build_model("random_forest", True, seed=seed, train_rows=len(grown))
        fit(model, grown[col.MODEL_INPUT_COLUMNS], grown[col.TARGET], grown[col.REGISTRATIONS])
        with mlflow.start_run():
            uri = log_model(model, grown[col.MODEL_INPUT_COLUMNS].head(5))
        versions.append(str(mlflow.register_model(uri, MODEL).version))
    return versions


def served(api_url: str) -> str | None:
    try:
        return httpx.get(f"{api_url}/ready", timeout=2).json().get("model_version")
    except httpx.HTTPError:
        return None


def promotions(mlflow_url: str, api_url: str, versions: list[str], count: int) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_url, registry_uri=mlflow_url)
    seconds = []
    for number in range(count):
        target = versions[(number + 1) % 2]
        began = time.perf_counter()
        client.set_registered_model_alias(MODEL, "production", target)
        while served(api_url) != target:
            if time.perf_counter() - began > 120:
                raise SystemExit(f"version {target} not served 120 s after its promotion")
            time.sleep(0.02)
        seconds.append(time.perf_counter() - began)
        time.sleep(0.5)
    return seconds


def run_service(mlflow_url: str, log_path: Path, webhook: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = local.free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CO2_")},
        "MLFLOW_TRACKING_URI": mlflow_url,
        "CO2_MODEL_NAME": MODEL,
        **local.MLFLOW_CLIENT_ENV,
    }
    if webhook:
        env |= {"CO2_WEBHOOK_URL": f"{api_url}/registry/events", "CO2_WEBHOOK_SECRET": secrets.token_urlsafe(32)}
    process = subprocess.Popen(
        [CO2, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    return process, api_url


def summary(label: str, seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return (
        f"  {label:<34} n={len(seconds):>2}  min {ordered[0]:6.2f} s  median {statistics.median(ordered):6.2f} s  "
        f"p90 {p90:6.2f} s  max {ordered[-1]:6.2f} s"
    )


def load_phases(log_path: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The phases of the service's first load (at start-up, imports included) and of each load after it."""
    loads = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "model_swapped_in" in line:
            loads.append(
                {
                    phase: float(match.group(1))
                    for phase in PHASES
                    if (match := re.search(rf"\b{phase}=([0-9.]+)", line))
                }
            )
    first, promoted = (loads[0], loads[1:]) if loads else ({}, [])
    return first, {phase: [load[phase] for load in promoted if phase in load] for phase in PHASES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promotions", type=int, default=20)
    parser.add_argument("--baseline-promotions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="co2-bench-promotion-") as tmp:
        home = Path(tmp)
        port = local.free_port()
        os.environ[local.WEBHOOK_KEY_ENV] = Fernet.generate_key().decode()  # inherited by the MLflow server
        mlflow = local.start_mlflow(home, "127.0.0.1", port)
        mlflow_url = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {}
        try:
            mlflow.wait_healthy(180)
            print("training two versions of the forest ...", flush=True)
            versions = train_versions(mlflow_url, home)
            for label, webhook, count in (
                ("baseline: polling every 30 s", False, args.baseline_promotions),
                ("webhook (default settings)", True, args.promotions),
            ):
                log_path = home / f"service-{'webhook' if webhook else 'poll'}.log"
                from mlflow import MlflowClient

                MlflowClient(mlflow_url, registry_uri=mlflow_url).set_registered_model_alias(
                    MODEL, "production", versions[0]
                )
                service, api_url = run_service(mlflow_url, log_path, webhook)
                try:
                    local.wait_until_healthy(
                        "co2 serve", lambda url=api_url: served(url) == versions[0], lambda: True, log_path, 120
                    )
                    time.sleep(6)  # MLflow's cached list of webhooks (MLFLOW_WEBHOOK_CACHE_TTL, 5 s) sees the new one
                    print(f"{label}: {count} promotions ...", flush=True)
                    results[label] = promotions(mlflow_url, api_url, versions, count)
                finally:
                    service.terminate()
                    service.wait(30)
                results[f"{label} phases"] = load_phases(log_path)
        finally:
            mlflow.stop()
    print("\npromotion -> served (alias moved -> /ready names the version), same machine, same run")
    for label in ("baseline: polling every 30 s", "webhook (default settings)"):
        print(summary(label, results[label]))
    first, promoted = results["webhook (default settings) phases"]
    print("where a load goes (the service's log, each promotion's load in the webhook run, median):")
    for phase, values in promoted.items():
        if values:
            print(f"  {phase:<22} {statistics.median(values):6.3f} s  (max {max(values):.3f} s)")
    if first:
        print(
            "  the service's first load, at start-up (imports included): "
            + ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in first.items())
        )
    print("targets: promotion -> served < 3 s; a load < 1 s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
