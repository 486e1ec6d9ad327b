"""Benchmark: the prediction service against `mlflow models serve`, same model, same machine, same run.

Both serve the registered production model (a RandomForest with the make, trained on the real
sample), each as one process, and `wrk` (Debian package `wrk`) drives both with the same
requests: single cars (a car the forest answers, not an electric one) at 1, 4 and 16 concurrent
connections, and 1,000-car batches.
Baseline: `mlflow models serve` (what a user would otherwise pick). Printed: requests per second,
p50 and p99 latency of each, and the ratio; and, for scale, the single-car load on FastAPI alone
(`fastapi_floor.py`: the same car validated, a constant answered), the floor of this stack on
this machine at that moment.

Targets: at least 3x the baseline's single-car throughput; at 16 concurrent clients a single-car
p99 under 10 ms on a quiet machine and under 20 ms while a training task runs on the same cores;
a 1,000-car batch p99 under 30 ms.

`--mlserver-env DIR` also serves the model with MLServer (the server KServe uses for MLflow
models: `mlserver start` with mlserver-mlflow's runtime) from a separate environment, e.g. made with
`python3 -m venv DIR && DIR/bin/pip install mlserver==1.7.1 mlserver-mlflow==1.7.1 'uvloop==0.21.*'`
plus this project's scikit-learn, numpy, pandas, skops and mlflow versions; it is measured without
batching and with adaptive batching, on one and on two workers, and this service must make at least
3x its best configuration's single-car throughput.

`--under-training` measures the single-car load again while a training process (the random forest,
fit over and over on both cores) runs beside the service: at normal priority (the baseline, as a
task ran before) and at the priority the platform gives Airflow's task processes (`TASK_NICENESS`).

    python bench/serving_vs_mlflow_serve.py [--seconds 10] [--mlserver-env DIR] [--under-training]
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
import time
from pathlib import Path

import httpx
import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR / "include"))

from co2 import local  # noqa: E402
from co2.stack import TASK_NICENESS, niced  # noqa: E402
from co2_model import columns as col  # noqa: E402
from co2_model.vocabulary import ZERO_EMISSION_FUEL_TYPES  # noqa: E402

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
    parser.add_argument("--mlserver-env", type=Path, help="a virtual environment with mlserver and mlserver-mlflow")
    parser.add_argument("--under-training", action="store_true", help="also measure beside a training process")
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
        # a car the forest answers: an electric car's answer is a rule, which would leave the model out
        emitting = test[~test[col.FUEL_TYPE].isin(ZERO_EMISSION_FUEL_TYPES)]
        car = {k: v for k, v in emitting[col.MODEL_INPUT_COLUMNS].iloc[0].items() if pd.notna(v)}
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
        quiet = next(o for label, connections, _, o in rows if (label, connections) == ("1 car", 16))
        floor = framework_floor(car, args.seconds, home)
        print(
            f"\nFastAPI alone (the same car validated, a constant answered), 16 clients: {floor['rps']:.1f} req/s, "
            f"p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms (this service: p99 {quiet['p99_ms']:.1f} ms)"
        )
        print_targets(rows)
        if args.under_training:
            beside_training(f"http://127.0.0.1:{ours_port}/predict", car, args.seconds, home, quiet)
        if args.mlserver_env:
            versus_mlserver(args.mlserver_env, cars, car, args.seconds, home, ours_port, quiet)
    finally:
        for process in reversed(processes):
            process.stop()
    return 0


def framework_floor(car: dict, seconds: int, home: Path) -> dict[str, float]:
    """The single-car load at 16 clients on `fastapi_floor.py`: uvicorn, one process, as the service runs."""
    port = local.free_port()
    floor = local.start(
        "fastapi-floor",
        [
            local.executable("uvicorn"),
            "fastapi_floor:app",
            "--app-dir",
            str(PROJECT_DIR / "bench"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        f"http://127.0.0.1:{port}/openapi.json",
        home / "floor.log",
        {"PYTHONPATH": f"{PROJECT_DIR}:{PROJECT_DIR / 'include'}"},
    )
    try:
        floor.wait_healthy(60)
        return wrk(f"http://127.0.0.1:{port}/predict", car, 16, seconds, home)
    finally:
        floor.stop()


def print_targets(rows: list[tuple[str, int, dict[str, float], dict[str, float]]]) -> None:
    """The targets, met or not, from the figures just measured."""
    by_load = {(label, connections): (b, o) for label, connections, b, o in rows}
    base, ours = by_load[("1 car", 16)]
    _, batch = by_load[("1,000 cars", 1)]
    checks = [
        (
            "single-car throughput at 16 clients >= 3x baseline",
            ours["rps"] / base["rps"] >= 3,
            f"{ours['rps'] / base['rps']:.2f}x",
        ),
        ("single-car p99 at 16 clients < 10 ms (quiet)", ours["p99_ms"] < 10, f"{ours['p99_ms']:.1f} ms"),
        ("1,000-car batch p99 (one client) < 30 ms", batch["p99_ms"] < 30, f"{batch['p99_ms']:.1f} ms"),
    ]
    print()
    for text, met, figure in checks:
        print_check(text, met, figure)


def print_check(text: str, met: bool, figure: str) -> None:
    print(f"{'met ' if met else 'MISSED'}  {text}: {figure}")


# Fits the random forest with the make on the sample over and over, on both cores, until killed.
TRAINING = """
import sys
import pandas as pd
sys.path.insert(0, sys.argv[1])
from co2_model import columns as col
from co2_model.model import build_model, fit
train = pd.read_parquet(sys.argv[2])
while True:
    model = build_model("random_forest", True)
    model.set_params(regressor__regressor__regressor__n_jobs=2)
    fit(model, train[col.MODEL_INPUT_COLUMNS], train[col.TARGET], train[col.REGISTRATIONS])
"""


def beside_training(url: str, car: dict, seconds: int, home: Path, quiet: dict[str, float]) -> None:
    """Single cars at 16 clients while a training process runs: at normal priority, then niced
    (`quiet`: the same load measured without it)."""
    figures = {}
    for label, niceness in (
        ("normal priority (baseline)", 0),
        (f"nice {TASK_NICENESS}, as the platform runs tasks", TASK_NICENESS),
    ):
        trainer = subprocess.Popen(
            [
                *niced(niceness),
                sys.executable,
                "-c",
                TRAINING,
                str(PROJECT_DIR / "include"),
                str(home / "train.parquet"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)  # the training under way, both cores busy
            assert trainer.poll() is None, "the training process stopped"
            figures[label] = wrk(url, car, 16, seconds, home)
        finally:
            trainer.kill()
            trainer.wait()
    print(f"\nsingle car, 16 clients, beside a training process on both cores (quiet: p99 {quiet['p99_ms']:.1f} ms)")
    for label, o in figures.items():
        print(f"  training at {label:<36} {o['rps']:>8.1f} req/s  p50 {o['p50_ms']:5.1f} ms  p99 {o['p99_ms']:6.1f} ms")
    niced_load = list(figures.values())[-1]
    print_check("single-car p99 beside training < 20 ms", niced_load["p99_ms"] < 20, f"{niced_load['p99_ms']:.1f} ms")


# MLServer's configurations: name, parallel workers, adaptive batching (max batch size, max wait in s).
MLSERVER_CONFIGURATIONS = (
    ("no batching, 1 worker", 1, 1, 0.0),
    ("adaptive batching 32 / 5 ms, 1 worker", 1, 32, 0.005),
    ("adaptive batching 32 / 5 ms, 2 workers", 2, 32, 0.005),
)


def v2_body(cars: list[dict]) -> dict:
    """Open Inference Protocol (V2) request with the pandas codec: one input per model column, a row per
    car, null where a car lacks a value (every column always, since batching joins requests by column)."""
    inputs = []
    for name in col.MODEL_INPUT_COLUMNS:
        values = [car.get(name) for car in cars]
        numeric = name in col.NUMERIC_FEATURES
        inputs.append(
            {
                "name": name,
                "datatype": "FP64" if numeric else "BYTES",
                "shape": [len(cars), 1],
                "data": [None if v is None else float(v) for v in values] if numeric else values,
            }
        )
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def versus_mlserver(
    env_dir: Path, cars: list[dict], car: dict, seconds: int, home: Path, ours_port: int, ours: dict[str, float]
) -> None:
    """MLServer on the same model in each configuration, single cars at 16 clients, against this
    service's figures (`ours`, measured in the same run)."""
    import mlflow

    model_uri = "models:/co2-emissions@production"
    model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(home / "mlserver-model")))
    mlserver = str(env_dir / "bin" / "mlserver")
    version = subprocess.run([mlserver, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    results = {}
    for number, (name, workers, batch_size, batch_seconds) in enumerate(MLSERVER_CONFIGURATIONS):
        folder = home / f"mlserver-{number}"
        (folder / "run").mkdir(parents=True)
        model_settings = {
            "name": "co2-emissions",
            "implementation": "mlserver_mlflow.MLflowRuntime",
            "parameters": {"uri": str(model_dir)},
            "max_batch_size": batch_size,
            "max_batch_time": batch_seconds,
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
        run_dir = str(folder / "run")
        server_settings = {"host": "127.0.0.1", "metrics_dir": run_dir, "environments_dir": run_dir}
        (folder / "settings.json").write_text(json.dumps(server_settings))
        port = local.free_port()
        env = {
            "MLSERVER_HTTP_PORT": str(port),
            "MLSERVER_GRPC_PORT": str(local.free_port()),
            "MLSERVER_METRICS_PORT": str(local.free_port()),
            "MLSERVER_PARALLEL_WORKERS": str(workers),
            # MLServer 1.7.1 cannot encode pandas 3's string columns (the model's `method`): KeyError 'O'
            "PANDAS_FUTURE_INFER_STRING": "0",
        }
        url = f"http://127.0.0.1:{port}/v2/models/co2-emissions"
        server = local.start("mlserver", [mlserver, "start", str(folder)], f"{url}/ready", folder / "mlserver.log", env)
        try:
            server.wait_healthy(180)
            answer = httpx.post(f"{url}/infer", json=v2_body(cars[:20]), timeout=60).json()
            theirs = next(o["data"] for o in answer["outputs"] if o["name"] == "co2_wltp_g_km")
            mine = httpx.post(f"http://127.0.0.1:{ours_port}/predict/batch", json={"cars": cars[:20]}).json()
            same = [abs(a - b["co2_wltp_g_km"]) < 0.01 for a, b in zip(theirs, mine["predictions"], strict=True)]
            assert all(same), (theirs[:3], mine["predictions"][:3])
            results[name] = wrk(f"{url}/infer", v2_body([car]), 16, seconds, home)
        finally:
            server.stop()
    print(f"\nsingle car, 16 clients: MLServer {version} (mlserver-mlflow runtime) against this service")
    for name, o in results.items():
        print(f"  MLServer, {name:<40} {o['rps']:>8.1f} req/s  p50 {o['p50_ms']:6.1f} ms  p99 {o['p99_ms']:6.1f} ms")
    print(
        f"  this service{'':<38} {ours['rps']:>8.1f} req/s  p50 {ours['p50_ms']:6.1f} ms  p99 {ours['p99_ms']:6.1f} ms"
    )
    best = max(results.values(), key=lambda o: o["rps"])
    ratio = ours["rps"] / best["rps"]
    print_check("single-car throughput >= 3x MLServer's best configuration", ratio >= 3, f"{ratio:.2f}x")


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
    train.to_parquet(home / "train.parquet")  # what `--under-training` fits over and over
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
