"""Benchmark: discover → download → validate → preprocess → train on a generated three-year window.

It generates three full years (2022-2024, each about 10 M registrations and about 100k configurations;
see generate_full_year.py) unless they exist, serves them with the local discodata server, starts an
MLflow server, and runs each step in a fresh process so that its wall time and its own peak memory
(max RSS) can be read. Baseline, measured in the same run: the same steps on the newest year alone
(no backtest there: one year has no year before it), so the ratios show what the window costs.

Targets: the three-year window in under 15 minutes on 2 cores (steps in sequence, as 2 cores run the
training tasks anyway), peak memory of a step under 6 GB.

    python bench/pipeline_window.py [--db bench/out/window.sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2 import local  # noqa: E402
from co2_model.families import FAMILIES  # noqa: E402

STEP = """
import json, sys
from dataclasses import asdict
from pathlib import Path
from co2.settings import Settings
settings = Settings()
step, arg = sys.argv[1], sys.argv[2]
if step == "discover":
    from co2.discodata import DiscodataClient
    from co2.releases import discover
    with DiscodataClient.from_settings(settings) as client:
        out = discover(settings, client).to_dict()
elif step == "download":
    from co2.pipeline.download import download
    discovered = json.loads(arg)
    tables = {int(year): table for year, table in discovered["tables"].items()}
    out = asdict(download(settings, tables, discovery=discovered))
elif step == "validate":
    from co2.pipeline.validate import validate
    out = asdict(validate(Path(arg), settings.reports_dir, min_rows=100))
elif step == "preprocess":
    from co2.pipeline.preprocess import preprocess
    out = asdict(preprocess(Path(arg), settings.processed_dir, test_fraction=0.2, split_salt="co2"))
else:
    from co2.pipeline.train import train_family
    out = [c.to_dict() for c in train_family(step.removeprefix("train_"), Path(arg), settings)]
print("RESULT " + json.dumps(out))
"""


def run_step(step: str, arg: str, env: dict[str, str], before: str = "") -> tuple[float, float, Any]:
    """Wall seconds, peak RSS in GB of that process alone, and the step's result (`before`: code run
    first in that process)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", before + STEP, step, arg],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{step} failed with exit code {process.returncode}")
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    return seconds, usage.ru_maxrss / 1024 / 1024, result


def train_steps(
    lineage_path: str, env: dict[str, str], before: str = "", families: Sequence[str] = FAMILIES
) -> dict[str, tuple[float, float]]:
    """Each family's training task on the processed splits: wall seconds and peak GB, MAE printed."""
    figures: dict[str, tuple[float, float]] = {}
    for family in families:
        seconds, peak, candidates = run_step(f"train_{family}", lineage_path, env, before)
        figures[f"train_{family}"] = (seconds, peak)
        maes = ", ".join(
            f"{c['name']} MAE {c['mae_g_km']:.2f}"
            + (f" (backtest {c['backtest_mae_g_km']:.2f})" if c.get("backtest_mae_g_km") is not None else "")
            for c in candidates
        )
        print(f"  train_{family:<18} {seconds:7.1f} s  {peak:5.2f} GB  {maes}")
    return figures


def pipeline(emulator_db: Path, years: int, home: Path, mlflow_uri: str) -> tuple[dict[str, tuple[float, float]], str]:
    """Each step on the newest `years` years of the database: wall seconds and peak GB per step, and
    the processed splits' lineage file."""
    port = local.free_port()
    command = [local.executable("co2"), "discodata-emulator", "--host", "127.0.0.1", "--port", str(port)]
    # a full year's GROUP BY takes longer than the emulator's default limit on a query
    limits = {"CO2_EMULATOR_QUERY_TIMEOUT_SECONDS": "900"}
    emulator = local.start(
        "emulator",
        [*command, "--db", str(emulator_db)],
        f"http://127.0.0.1:{port}/health",
        home / "emulator.log",
        limits,
    )
    try:
        emulator.wait_healthy(600)
        env = {
            "CO2_DISCODATA_URL": f"http://127.0.0.1:{port}",
            "CO2_DATA_DIR": str(home / "data"),
            "CO2_WINDOW_YEARS": str(years),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "CO2_HTTP_TIMEOUT_SECONDS": "900",
        }
        figures: dict[str, tuple[float, float]] = {}
        seconds, peak, discovered = run_step("discover", "", env)
        figures["discover"] = (seconds, peak)
        print(f"  discover    {seconds:7.1f} s  {peak:5.2f} GB  {', '.join(discovered['tables'].values())}")
        seconds, peak, downloaded = run_step("download", json.dumps(discovered), env)
        figures["download"] = (seconds, peak)
        rows, registrations = downloaded["rows"], downloaded["registrations"]
        print(f"  download    {seconds:7.1f} s  {peak:5.2f} GB  rows={rows:,} registrations={registrations:,}")
        seconds, peak, _ = run_step("validate", downloaded["snapshot_path"], env)
        figures["validate"] = (seconds, peak)
        print(f"  validate    {seconds:7.1f} s  {peak:5.2f} GB")
        seconds, peak, processed = run_step("preprocess", downloaded["snapshot_path"], env)
        figures["preprocess"] = (seconds, peak)
        train_rows, test_rows = processed["train_rows"], processed["test_rows"]
        print(f"  preprocess  {seconds:7.1f} s  {peak:5.2f} GB  train={train_rows:,} test={test_rows:,}")
        figures |= train_steps(processed["lineage_path"], env)
        return figures, str(processed["lineage_path"])
    finally:
        emulator.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=PROJECT_DIR / "bench" / "out" / "window.sqlite")
    args = parser.parse_args()
    if not args.db.exists():
        print(f"generating three full years into {args.db}")
        generator = [sys.executable, str(PROJECT_DIR / "bench" / "generate_full_year.py"), "--out", str(args.db)]
        subprocess.run([*generator, "--years", "2022", "2023", "2024"], check=True)
    home = Path(tempfile.mkdtemp(prefix="co2-bench-"))
    mlflow = local.start_mlflow(home, "127.0.0.1", local.free_port())
    try:
        mlflow.wait_healthy(180)
        mlflow_uri = mlflow.health_url.removesuffix("/health")
        print("baseline: the newest year alone")
        baseline, _ = pipeline(args.db, 1, home / "one-year", mlflow_uri)
        print("the three-year window")
        window, _ = pipeline(args.db, 3, home / "window", mlflow_uri)
    finally:
        mlflow.stop()
    print(f"\n{'step':<24}{'3 years s':>10}{'1 year s':>10}{'ratio':>8}{'3y GB':>8}{'1y GB':>8}")
    for step, (seconds, peak) in window.items():
        one_seconds, one_peak = baseline[step]
        print(f"{step:<24}{seconds:10.1f}{one_seconds:10.1f}{seconds / one_seconds:8.1f}{peak:8.2f}{one_peak:8.2f}")
    # In Airflow the three training tasks run in parallel; on 2 cores count them as sequential.
    total = sum(seconds for seconds, _ in window.values())
    one_year = sum(seconds for seconds, _ in baseline.values())
    peak = max(p for _, p in window.values())
    print(f"\nthree years, steps in sequence: {total / 60:.1f} min (one year {one_year / 60:.1f} min)")
    print(f"  target 15 min: {'met' if total <= 900 else 'missed'} ({total / 900:.2f} of it)")
    print(f"largest peak memory of a step: {peak:.2f} GB; target 6 GB: {'met' if peak <= 6 else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
