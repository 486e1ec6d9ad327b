"""Benchmark: the prediction service against `mlflow models serve`, same model, same machine, same run.

Both serve the registered production model (a RandomForest with the make, trained on the real
sample), each as one process, and `wrk` (Debian package `wrk`) drives both with the same
requests: single cars at 1, 4 and 16 concurrent connections, and 1,000-car batches.
Baseline: `mlflow models serve` (what a user would otherwise pick). Printed: requests per second,
p50 and p99 latency of each, and the ratio.

Targets: at least 3x the baseline's single-car throughput with p99 under 20 ms at 16 concurrent
clients, and a 1,000-car batch in under 50 ms.

    python bench/serving_vs_mlflow_serve.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2 import local  # noqa: E402
from co2_model import columns as col  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, body: dict, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    """Requests/s, p50 and p99 in ms, and non-2xx answers."""
    body_path = workdir / f"body_{abs(hash(json.dumps(body))) % 10**8}.json"
    body_path.write_text(json.dumps(body))
    script = workdir / "post.lua"
    script.write_text(LUA.format(body=body_path))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="processes of each server (the same for both)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="co2-serving-bench-"))
    processes: list[local.ManagedProcess] = []
    try:
        mlflow = local.start_mlflow(home, "127.0.0.1", local.free_port())
        processes.append(mlflow)
        mlflow.wait_healthy(180)
        uri = mlflow.health_url.removesuffix("/health")
        # `mlflow models serve` runs `uvicorn` from PATH: this environment's
        env = {"MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        os.environ.update(env)
        test = train_and_promote(uri, home)
        car = {k: v for k, v in test[col.MODEL_INPUT_COLUMNS].iloc[0].items() if pd.notna(v)}
        cars = [
            {k: v for k, v in row.items() if pd.notna(v)}
            for row in test[col.MODEL_INPUT_COLUMNS]
            .sample(1000, replace=True, random_state=0)
            .to_dict(orient="records")
        ]

        base_port, ours_port = local.free_port(), local.free_port()
        baseline = local.start(
            "mlflow-models-serve",
            [
                local.executable("mlflow"),
                "models",
                "serve",
                "-m",
                "models:/co2-emissions@production",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(base_port),
                "-w",
                str(args.workers),
            ],
            f"http://127.0.0.1:{base_port}/ping",
            home / "baseline.log",
            env,
        )
        processes.append(baseline)
        ours = local.start(
            "co2-serve",
            [
                local.executable("co2"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ours_port),
                "--workers",
                str(args.workers),
            ],
            f"http://127.0.0.1:{ours_port}/ready",
            home / "ours.log",
            {**env, "CO2_POLL_SECONDS": "30"},
        )
        processes.append(ours)
        baseline.wait_healthy(180)
        ours.wait_healthy(180)
        # same answers before measuring speed
        theirs = httpx.post(f"http://127.0.0.1:{base_port}/invocations", json={"dataframe_records": cars[:20]}).json()[
            "predictions"
        ]
        mine = httpx.post(f"http://127.0.0.1:{ours_port}/predict/batch", json={"cars": cars[:20]}).json()["predictions"]
        # the model answers a row per car (CO2, its interval, the method): `mlflow models serve` gives the rows
        theirs = [row["co2_wltp_g_km"] if isinstance(row, dict) else row for row in theirs]
        assert all(abs(a - b["co2_wltp_g_km"]) < 0.01 for a, b in zip(theirs, mine, strict=True)), (
            theirs[:3],
            mine[:3],
        )

        rows = []
        for label, connections, their_body, our_body, our_path in [
            ("1 car", 1, {"dataframe_records": [car]}, car, "/predict"),
            ("1 car", 4, {"dataframe_records": [car]}, car, "/predict"),
            ("1 car", 16, {"dataframe_records": [car]}, car, "/predict"),
            ("1,000 cars", 1, {"dataframe_records": cars}, {"cars": cars}, "/predict/batch"),
            ("1,000 cars", 4, {"dataframe_records": cars}, {"cars": cars}, "/predict/batch"),
        ]:
            b = wrk(f"http://127.0.0.1:{base_port}/invocations", their_body, connections, args.seconds, home)
            o = wrk(f"http://127.0.0.1:{ours_port}{our_path}", our_body, connections, args.seconds, home)
            rows.append((label, connections, b, o))
        print(
            f"\n{'request':<11}{'conc':>5} | {'mlflow serve rps':>16}{'p50 ms':>8}{'p99 ms':>8} | "
            f"{'co2 serve rps':>13}{'p50 ms':>8}{'p99 ms':>8} | {'rps ratio':>9}"
        )
        for label, connections, b, o in rows:
            print(
                f"{label:<11}{connections:>5} | {b['rps']:>16.1f}{b['p50_ms']:>8.1f}{b['p99_ms']:>8.1f} | "
                f"{o['rps']:>13.1f}{o['p50_ms']:>8.1f}{o['p99_ms']:>8.1f} | {o['rps'] / b['rps']:>8.2f}x"
                + (
                    f"  (non-2xx: baseline {b['errors']:.0f}, ours {o['errors']:.0f})"
                    if b["errors"] or o["errors"]
                    else ""
                )
            )
        print_targets(rows)
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


def print_targets(rows: list[tuple[str, int, dict[str, float], dict[str, float]]]) -> None:
    """The issue's targets, met or not, from the figures just measured."""
    by_load = {(label, connections): (b, o) for label, connections, b, o in rows}
    base, ours = by_load[("1 car", 16)]
    _, batch = by_load[("1,000 cars", 1)]
    checks = [
        (
            "single-car throughput at 16 clients >= 3x baseline",
            ours["rps"] / base["rps"] >= 3,
            f"{ours['rps'] / base['rps']:.2f}x",
        ),
        ("single-car p99 at 16 clients < 20 ms", ours["p99_ms"] < 20, f"{ours['p99_ms']:.1f} ms"),
        ("1,000-car batch (one client, p50) < 50 ms", batch["p50_ms"] < 50, f"{batch['p50_ms']:.1f} ms"),
    ]
    print()
    for text, met, figure in checks:
        print(f"{'met ' if met else 'MISSED'}  {text}: {figure}")


def train_and_promote(uri: str, home: Path) -> pd.DataFrame:
    """The pipeline's own steps on the bundled sample, then promotion of a RandomForest with the make."""
    import mlflow

    from co2.mlflow_utils import log_model
    from co2.pipeline.download import download
    from co2.pipeline.preprocess import preprocess
    from co2.settings import Settings
    from co2_model.model import build_model, fit

    port = local.free_port()
    emulator = local.start_emulator(home, "127.0.0.1", port)
    try:
        emulator.wait_healthy(120)
        settings = Settings(data_dir=home / "data", discodata_url=f"http://127.0.0.1:{port}")
        snapshot = download(settings, {2021: settings.table_for(2021)})
    finally:
        emulator.stop()
    splits = preprocess(Path(snapshot.snapshot_path), settings.processed_dir, test_fraction=0.2, split_salt="co2")
    train, test = pd.read_parquet(splits.train_path), pd.read_parquet(splits.test_path)
    model = fit(
        build_model("random_forest", True), train[col.MODEL_INPUT_COLUMNS], train[col.TARGET], train[col.REGISTRATIONS]
    )
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        model_uri = log_model(model, test[col.MODEL_INPUT_COLUMNS].head(5))
    version = mlflow.register_model(model_uri, "co2-emissions")
    mlflow.MlflowClient(uri).set_registered_model_alias("co2-emissions", "production", version.version)
    return test


if __name__ == "__main__":
    sys.exit(main())
