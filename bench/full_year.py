"""Benchmark: one full year through the pipeline, discover to the three training tasks.

It generates one full year (2024: about 10 M registrations of about 110k configurations; see
generate_full_year.py) unless it exists, serves it with the local discodata server, starts an MLflow
server and runs each step in a fresh process, so that its wall time and its own peak memory (max RSS)
can be read (pipeline_window.py's steps, on one year).

Baselines, measured in the same run:
- the local server's aggregation of the year without the index it now keeps for the download's
  `GROUP BY` (the same query on the same SQLite file, `NOT INDEXED`), against the same query indexed;
- each training task again with the model's previous settings (`BEFORE`), on the same splits, with
  its MAE on the same test split (scored as now: each candidate asked once per caller, not four
  times, so the baseline is the faster for it).

Targets: the year in under 5 minutes on 2 cores (steps in sequence, as 2 cores run the training
tasks anyway), peak memory of a step under 4 GB, the test MAE kept.

    python bench/full_year.py [--db bench/out/full_year.sqlite] [--no-baseline]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "include"))
sys.path.insert(0, str(BENCH_DIR))

from co2 import local  # noqa: E402
from co2.emulator import translate  # noqa: E402
from co2.pipeline.download import aggregation_query, columns_to_request  # noqa: E402
from co2_model.families import FAMILIES  # noqa: E402
from pipeline_window import pipeline, train_steps  # noqa: E402

YEAR = 2024
# The final regressors' settings before they were sized for a full year (scikit-learn names).
BEFORE = {
    "random_forest": {"n_estimators": 100, "max_features": 0.5, "bootstrap": False, "max_samples": None, "n_jobs": 1},
    "knn": {"n_neighbors": 4, "weights": "distance", "metric": "minkowski", "p": 1},
}
# Run first in a baseline training process: the candidates are built as before.
WITH_BEFORE = f"""
import co2.pipeline.train as _train
_build = _train.build_model
def _before(family, with_make, seed=42, train_rows=0):
    model = _build(family, with_make, seed, train_rows=train_rows)
    settings = {BEFORE!r}.get(family, {{}})
    model.set_params(**{{f"regressor__regressor__regressor__{{k}}": v for k, v in settings.items()}})
    return model
_train.build_model = _before
"""


def aggregation_seconds(db: Path) -> tuple[float, float, int]:
    """The download's aggregation of the year in SQLite: without the index, with it, and its rows."""
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    table = next(str(r[0]) for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    columns = [str(r[1]) for r in connection.execute(f"PRAGMA table_info([{table}])")]
    query, _ = translate(aggregation_query(table, columns_to_request(columns, table)))
    timings = []
    for sql in (query.replace(f"FROM [{table}]", f"FROM [{table}] NOT INDEXED", 1), query):
        started = time.perf_counter()
        rows = len(connection.execute(sql).fetchall())
        timings.append(time.perf_counter() - started)
    connection.close()
    return timings[0], timings[1], rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, default=BENCH_DIR / "out" / "full_year.sqlite")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baselines")
    parser.add_argument(
        "--baseline-families",
        nargs="+",
        default=list(FAMILIES),
        help="the training tasks to run again as before (knn's old Manhattan distances alone take ~15 min)",
    )
    args = parser.parse_args()
    if not args.db.exists():
        print(f"generating a full year into {args.db}")
        generator = [sys.executable, str(BENCH_DIR / "generate_full_year.py"), "--out", str(args.db)]
        subprocess.run([*generator, "--years", str(YEAR)], check=True)
    home = Path(tempfile.mkdtemp(prefix="co2-bench-"))
    mlflow = local.start_mlflow(home, "127.0.0.1", local.free_port())
    try:
        mlflow.wait_healthy(180)
        mlflow_uri = mlflow.health_url.removesuffix("/health")
        print(f"{YEAR}, every step in its own process")
        now, lineage = pipeline(args.db, 1, home / "now", mlflow_uri)
        before: dict[str, tuple[float, float]] = {}
        if not args.no_baseline:
            print("baseline: the training tasks with the previous settings, on the same splits")
            env = {"CO2_DATA_DIR": str(home / "now" / "data"), "MLFLOW_TRACKING_URI": mlflow_uri}
            before = train_steps(lineage, env, WITH_BEFORE, args.baseline_families)
    finally:
        mlflow.stop()
    if not args.no_baseline:
        unindexed, indexed, rows = aggregation_seconds(args.db)
        print(f"\nthe download's aggregation in SQLite ({rows:,} rows): {unindexed:.1f} s before the index,", end=" ")
        print(f"{indexed:.1f} s with it")
        print(f"\n{'training task':<24}{'now s':>8}{'before s':>10}{'now GB':>8}{'before GB':>10}")
        for step, (seconds, peak) in before.items():
            print(f"{step:<24}{now[step][0]:8.1f}{seconds:10.1f}{now[step][1]:8.2f}{peak:10.2f}")
    total = sum(seconds for seconds, _ in now.values())
    peak = max(p for _, p in now.values())
    print(f"\nthe year, steps in sequence: {total / 60:.1f} min; target 5 min: {'met' if total <= 300 else 'missed'}")
    if before:
        # before: the download as the server answered without its index, the training as it was set
        earlier = total - sum(now[s][0] for s in before) + sum(s for s, _ in before.values()) + unindexed - indexed
        print(f"  before, estimated from the baselines: {earlier / 60:.1f} min")
    print(f"largest peak memory of a step: {peak:.2f} GB; target 4 GB: {'met' if peak <= 4 else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
