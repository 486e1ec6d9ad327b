"""`co2`: the operations a user runs by hand."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from co2.logs import configure_console_logging, get_logger
from co2.settings import LIVE_DISCODATA_URL, Settings, get_settings

log = get_logger("co2.cli")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="co2", description=__doc__)
    parser.add_argument("--log-level", default=get_settings().log_level)
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of key=value")
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser("discodata-emulator", help="serve a CSV as a local discodata SQL service")
    source = emulator.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, action="append", help="CSV with discodata column names (repeatable)")
    source.add_argument("--db", type=Path, help="SQLite database with tables named as CO2_EEA_TABLES says")
    emulator.add_argument(
        "--generate-years",
        type=int,
        nargs="*",
        default=[],
        help="also serve these years, generated from the CSV's rows with documented drift (co2.generated)",
    )
    emulator.add_argument(
        "--publish-log", type=Path, help="keep publications in this file and publish them again at start"
    )
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8765)
    emulator.add_argument(
        "--fail-mode", choices=["none", "error500", "slow", "drop"], default="none", help="misbehave from the start"
    )
    emulator.add_argument("--fail-count", type=int, default=0, help="how many /sql requests misbehave")
    emulator.add_argument("--delay-seconds", type=float, default=0.0, help="delay of the 'slow' mode")
    emulator.set_defaults(handler=_emulator)

    publish = commands.add_parser(
        "discodata-publish", help="publish a new table on the running local discodata server (a new EEA release)"
    )
    publish.add_argument("table", help="e.g. co2cars_2024Pv29 (new year: generated) or co2cars_2023Fv28 (revision)")
    publish.add_argument("--url", default=None, help="the server (default: http://127.0.0.1:CO2_EMULATOR_PORT)")
    publish.add_argument("--listed-only", action="store_true", help="list the table in /md/ without serving it")
    publish.set_defaults(handler=_publish)

    run = commands.add_parser("run", help="run the retraining DAG once, end to end, and print what it registered")
    run.add_argument(
        "--source",
        choices=["local", "live"],
        default="local",
        help="local: the emulator on the bundled sample; live: the EEA service",
    )
    run.add_argument("--years", type=int, nargs="*", help="registration years (default: CO2_YEARS)")
    run.add_argument("--force-promotion", action="store_true")
    run.add_argument("--mlflow-port", type=int, default=get_settings().mlflow_port)
    run.add_argument("--emulator-port", type=int, default=get_settings().emulator_port)
    run.set_defaults(handler=_run)

    serve = commands.add_parser("serve", help="start the prediction service (FastAPI, uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes, each following the registry on its own")
    serve.set_defaults(handler=_serve)

    page = commands.add_parser("ui", help="start the prediction page (Streamlit), a client of the prediction service")
    page.add_argument("--host", default=None, help="address to listen on (default CO2_UI_HOST, 127.0.0.1)")
    page.add_argument("--port", type=int, default=None, help="port (default CO2_UI_PORT, 8501)")
    page.set_defaults(handler=_ui)

    up = commands.add_parser("up", help="start the whole platform as local processes (state in CO2_HOME)")
    up.add_argument(
        "--executor",
        choices=["LocalExecutor", "CeleryExecutor"],
        help="Airflow executor (default CO2_EXECUTOR); Celery uses CO2_CELERY_BROKER_URL",
    )
    up.add_argument("--celery-workers", type=int, help="`airflow celery worker` processes (default CO2_CELERY_WORKERS)")
    up.add_argument(
        "--sequential", action="store_true", help="start one component after the other (slower; for comparison)"
    )
    up.set_defaults(handler=_up)

    down = commands.add_parser("down", help="stop every process of the local platform")
    down.set_defaults(handler=_down)

    status = commands.add_parser("status", help="what of the local platform runs, where, and its memory")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_status)

    exporter = commands.add_parser(
        "statsd-exporter", help="StatsD in (UDP), Prometheus /metrics out, by deploy/statsd/mapping.yml (local mode)"
    )
    exporter.add_argument("--host", default="127.0.0.1")
    exporter.add_argument("--port", type=int, default=get_settings().statsd_port, help="UDP port StatsD arrives on")
    exporter.add_argument("--metrics-port", type=int, default=get_settings().statsd_exporter_port)
    exporter.add_argument("--mapping", type=Path, help="a statsd_exporter mapping (default: deploy/statsd/mapping.yml)")
    exporter.add_argument("--out", type=Path, help="also append every received line to this file")
    exporter.set_defaults(handler=_statsd_exporter)

    trigger = commands.add_parser(
        "trigger", help="trigger co2_retraining on the local platform and follow it to the end"
    )
    trigger.add_argument("--years", type=int, nargs="*", help="registration years (default: CO2_YEARS)")
    trigger.add_argument("--source", help="'live' or a discodata http(s) URL (default: the stack's source)")
    trigger.add_argument("--force-retrain", action="store_true", help="train even if nothing is new")
    trigger.add_argument("--force-promotion", action="store_true")
    trigger.add_argument("--no-wait", action="store_true", help="print the run id and return at once")
    trigger.set_defaults(handler=_trigger)

    registry = commands.add_parser(
        "registry", help="list the registered model's versions: metrics, training window, promotion decisions"
    )
    registry.add_argument("--json", action="store_true", help="print JSON (the newest and production versions too)")
    registry.add_argument("--limit", type=int, default=None, help="only the newest N versions")
    registry.set_defaults(handler=_registry)

    promote = commands.add_parser(
        "promote", help="point the production alias at another version (a rollback in one command)"
    )
    promote.add_argument("version", help="the version to serve, earlier or later than production's")
    promote.add_argument("--reason", default="", help="why, recorded on the version with who and when")
    promote.set_defaults(handler=_promote)

    args = parser.parse_args(argv)
    configure_console_logging(args.log_level, json=args.log_json)
    result: int = args.handler(args)
    return result


def _emulator(args: argparse.Namespace) -> int:
    from co2.emulator import DiscodataDatabase, EmulatorServer, Faults

    for path in args.csv or [args.db]:
        if not path.is_file():
            print(f"co2: no file at {path}: pass --csv (discodata column names) or --db (SQLite)", file=sys.stderr)
            return 2
    settings = get_settings()
    if args.db:
        if args.generate_years:
            print("co2: --generate-years needs --csv (the rows to generate from)", file=sys.stderr)
            return 2
        db = DiscodataDatabase(args.db, settings.emulator_query_timeout_seconds)
    else:
        try:
            db = DiscodataDatabase.from_csv(args.csv, settings, args.generate_years)
            if args.publish_log:
                db.replay(args.publish_log)
        except ValueError as exc:
            print(f"co2: {exc}", file=sys.stderr)
            return 2
    faults = Faults(args.fail_mode, args.fail_count, args.delay_seconds)
    server = EmulatorServer(db, args.host, args.port, faults, settings.emulator_allowed_hosts)
    log.info("emulator_listening", url=server.url, tables=",".join(server.db.tables()))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _publish(args: argparse.Namespace) -> int:
    import httpx

    url = (args.url or f"http://127.0.0.1:{get_settings().emulator_port}").rstrip("/")
    try:
        answer = httpx.post(
            f"{url}/_emulator/publish", json={"table": args.table, "listed_only": args.listed_only}, timeout=300
        )
    except httpx.HTTPError as exc:
        print(f"co2: the local discodata server at {url} does not answer ({exc}); is `co2 up` up?", file=sys.stderr)
        return 1
    body = answer.json()
    if answer.status_code != 200:
        print(f"co2: {body['errors'][0]['error']}", file=sys.stderr)
        return 1
    print(f"published {body['table']} ({body['rows']} rows) at {url}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from co2 import local
    from co2.registry import registry_summary

    home = local.co2_home()
    settings = get_settings()
    host = "127.0.0.1"
    started: list[local.ManagedProcess] = []
    try:
        for port, what in (
            (args.mlflow_port, "MLflow"),
            *(((args.emulator_port, "the discodata emulator"),) if args.source == "local" else ()),
        ):
            if not local.port_is_free(host, port):
                print(
                    f"co2: port {port} for {what} is taken; "
                    "stop what uses it or pick another (--mlflow-port / --emulator-port)",
                    file=sys.stderr,
                )
                return 2
        mlflow_uri = f"http://{host}:{args.mlflow_port}"
        started.append(local.start_mlflow(home, host, args.mlflow_port))
        if args.source == "local":
            discodata_url = f"http://{host}:{args.emulator_port}"
            started.append(local.start_emulator(home, host, args.emulator_port))
        else:
            discodata_url = LIVE_DISCODATA_URL
        for process in started:
            process.wait_healthy()

        env = {
            **local.run_airflow_environment(home),
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "CO2_DISCODATA_URL": discodata_url,
            "CO2_DATA_DIR": str(settings.data_dir if "CO2_DATA_DIR" in os.environ else home / "data"),
        }
        airflow = local.executable("airflow")
        log.info("airflow_db_migrate", airflow_home=env["AIRFLOW_HOME"])
        subprocess.run([airflow, "db", "migrate"], env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
        conf = {"years": args.years or [], "force_promotion": args.force_promotion}
        log.info("dag_run_started", dag_id="co2_retraining", source=discodata_url, conf=json.dumps(conf))
        completed = subprocess.run(
            [airflow, "dags", "test", "co2_retraining", "--conf", json.dumps(conf)], env={**os.environ, **env}
        )
        summary = registry_summary(Settings(mlflow_tracking_uri=mlflow_uri))
        print(json.dumps(summary, indent=2))
        if completed.returncode != 0 or not summary.get("latest_version"):
            print(
                f"co2: the DAG run failed (exit {completed.returncode}); the task logs above say which step and why",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        for process in reversed(started):
            process.stop()


def _serve(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    import uvicorn

    from co2.mlflow_utils import NO_PICKLE_ENV

    os.environ.update(NO_PICKLE_ENV)  # inherited by the workers
    if args.workers > 1:  # each worker process imports the app and reads the settings itself
        # Each worker writes its metrics to files in a fresh directory of its own (under
        # PROMETHEUS_MULTIPROC_DIR if set) and /metrics adds them up: set before any worker starts.
        metrics_dir = tempfile.mkdtemp(prefix="co2-metrics-", dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # a registry event reaches one worker; it wakes the others by touching this file (serving.registry)
        os.environ["CO2_SERVING_WAKE_FILE"] = str(Path(tempfile.mkdtemp(prefix="co2-wake-")) / "registry-event")
        try:
            uvicorn.run(
                "serving.main:app",
                host=args.host,
                port=args.port,
                workers=args.workers,
                log_level="warning",
                access_log=False,
            )
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: its own figures, in memory
        from serving.main import create_app

        uvicorn.run(create_app(get_settings()), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def _ui(args: argparse.Namespace) -> int:
    import importlib.util

    from ui import APP

    if importlib.util.find_spec("streamlit") is None:
        print("co2 ui: Streamlit is not installed; install the `ui` extra (pip install 'co2[ui]')", file=sys.stderr)
        return 2
    settings = get_settings()
    options = ui_options(args.host or settings.ui_host, args.port or settings.ui_port)
    command = [sys.executable, "-m", "streamlit", "run", str(APP), *options]
    os.execv(sys.executable, command)  # Streamlit in this process: a supervisor's signals reach it directly


def ui_options(host: str, port: int) -> list[str]:
    """Streamlit as a server: headless, no usage statistics (it works offline), no file watching, viewers' menu."""
    return [
        "--server.headless=true",
        f"--server.address={host}",
        f"--server.port={port}",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--server.runOnSave=false",
        # the service takes at most 10,000 cars, a few MB of CSV; a larger upload gets its 413 in words
        "--server.maxUploadSize=32",
        "--client.toolbarMode=viewer",
        "--client.showErrorDetails=none",
        "--global.developmentMode=false",
    ]


def _up(args: argparse.Namespace) -> int:
    from co2 import stack

    overrides = {
        key: value
        for key, value in (("executor", args.executor), ("celery_workers", args.celery_workers))
        if value is not None
    }
    settings = get_settings().model_copy(update=overrides)
    try:
        plan, state, timings = stack.up(settings, sequential=args.sequential)
    except (stack.StackError, FileNotFoundError) as exc:
        print(f"co2 up: {exc}", file=sys.stderr)
        return 1
    keys = stack.Secrets.load_or_create(plan.home)
    started = [timing for timing in timings if not timing.running_already]
    if started:
        total = max(timing.healthy_s for timing in started)
        print(f"co2 platform up in {total:.0f}s (state in {plan.home}); seconds since start, started -> healthy:")
        for timing in sorted(started, key=lambda t: t.healthy_s):
            waited = f"  (after {', '.join(timing.after)})" if timing.after else ""
            print(f"  {timing.name:<24} {timing.started_s:5.1f} -> {timing.healthy_s:5.1f}{waited}")
        print(f"  critical path: {' -> '.join(t.name for t in stack.critical_path(timings))}")
    else:
        print(f"co2 platform already up: every component is running (state in {plan.home})")
    # the experiment's link asks MLflow (and imports its client): once, then kept with the stack's state
    runs_url = state.info.get("training_runs_url")
    if not runs_url:
        runs_url = state.info["training_runs_url"] = training_runs_url(plan.mlflow_url, settings.experiment_name)
        state.save()
    for name, url in (
        ("Airflow UI and REST API", plan.airflow_url),
        ("MLflow", plan.mlflow_url),
        ("MLflow training runs", runs_url),
        ("Prediction service", f"{plan.api_url}/docs"),
        ("Prediction page", plan.ui_url),
        ("Prometheus alerts", state.info.get("prometheus_alerts_url")),
        ("Prometheus targets", state.info.get("prometheus_targets_url")),
        ("Alertmanager", state.info.get("alertmanager_url")),
        ("StatsD exporter", state.info.get("statsd_exporter_url")),
        ("Discodata source", plan.source_url),
    ):
        package = "prometheus-alertmanager" if name == "Alertmanager" else "prometheus"
        print(f"  {name:<24} {url or f'not installed (apt-get install {package})'}")
    print(f"  {'Airflow login':<24} {plan.admin_user} / {keys.admin_password}")
    workers = f" with {plan.celery_workers} worker(s)" if plan.celery_workers else ""
    print(f"  {'Executor':<24} {plan.executor}{workers}")
    print(f"  {'Logs':<24} {plan.logs_dir}")
    print("Next: `co2 trigger` runs the DAG now; `co2 status`; `co2 down` stops everything.")
    return 0


def training_runs_url(mlflow_url: str, experiment_name: str) -> str:
    """The training experiment's runs in MLflow's model-training view (created and tagged if need be)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from co2.experiment import prepare_experiment, runs_page_url

    try:
        experiment_id = prepare_experiment(MlflowClient(tracking_uri=mlflow_url), experiment_name)
    except MlflowException as exc:  # the links are a courtesy: never fail a command for them
        log.warning("experiment_not_prepared", error=str(exc)[:300])
        return f"{mlflow_url}/#/experiments?workflowType=machine_learning"
    return runs_page_url(mlflow_url, experiment_id)


def _down(args: argparse.Namespace) -> int:
    from co2 import local, stack

    home = local.co2_home()
    stopped = stack.down(home)
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from co2 import local, stack

    home = local.co2_home()
    report, info = stack.status(home)
    if args.json:
        print(json.dumps({"components": [asdict(c) for c in report], **info}, indent=2))
    elif not report:
        print(f"no platform recorded under {home}; start it with `co2 up`")
    else:
        for component in report:
            state = "running" if component.alive else "STOPPED"
            memory = f"{component.memory_mb:7.0f} MB"
            print(f"{component.name:<22} {state:<8} pid {component.pid:<8} {memory}  {component.url}")
        print(f"{'total':<22} {'':<8} {'':<12} {sum(c.memory_mb for c in report if c.alive):7.0f} MB")
    return 0 if report and all(c.alive for c in report) else 3


def _statsd_exporter(args: argparse.Namespace) -> int:
    from co2.local import PROJECT_DIR
    from co2.statsd_bridge import MappingError, StatsdBridge

    mapping = args.mapping or PROJECT_DIR / "deploy" / "statsd" / "mapping.yml"
    try:
        bridge = StatsdBridge(mapping, args.host, args.port, args.metrics_port, log_file=args.out)
    except (MappingError, OSError) as exc:
        print(f"co2 statsd-exporter: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        bridge.serve_forever()
    return 0


def _trigger(args: argparse.Namespace) -> int:
    import time

    import httpx

    from co2 import local, stack
    from co2.registry import registry_summary

    home = local.co2_home()
    try:
        client = stack.client_for(home)
        conf: dict[str, Any] = {
            "years": args.years or [],
            "force_retrain": args.force_retrain,
            "force_promotion": args.force_promotion,
        }
        if args.source:  # else the param's default: the stack's configured source
            conf["source"] = args.source
        run_id = client.trigger(stack.DAG_ID, conf)
        print(f"triggered {stack.DAG_ID} run {run_id}", flush=True)
        if args.no_wait:
            return 0
        began = time.monotonic()
        outcome = "failed"
        for task_id, state, ti in client.follow(stack.DAG_ID, run_id):
            if task_id == "__run__":
                outcome = state
                break
            attempt = f" (try {ti.get('try_number')})" if (ti.get("try_number") or 0) > 1 else ""
            print(f"  {time.monotonic() - began:6.0f}s  {task_id:<28} {state}{attempt}", flush=True)
        discovered = client.xcom(stack.DAG_ID, run_id, "discover")
        if discovered:  # why the run trained, or why it stopped after discovery: on the run's page too
            client.set_note(stack.DAG_ID, run_id, f"{discovered['reason']}. {discovered['discovery']['note']}.")
            print(f"discovery: {discovered['reason']}")
    except (stack.StackError, httpx.HTTPError) as exc:
        print(f"co2 trigger: {exc}", file=sys.stderr)
        return 1
    info = stack.StackState.load(home).info
    summary = registry_summary(get_settings().model_copy(update={"mlflow_tracking_uri": info["mlflow_url"]}))
    print(f"run {run_id}: {outcome} after {time.monotonic() - began:.0f}s")
    print(json.dumps(summary, indent=2))
    print(f"candidates in MLflow: {training_runs_url(info['mlflow_url'], get_settings().experiment_name)}")
    served = _wait_served(info["api_url"], summary, get_settings().poll_seconds)
    print(f"prediction service serves: {served}")
    return 0 if outcome == "success" else 1


def _wait_served(api_url: str, summary: dict[str, Any], poll_seconds: float) -> str:
    """Give the service one poll interval (and a bit) to switch to the production version."""
    import time

    import httpx

    from co2 import http_client

    key = next((k for k in summary if k.endswith("_version") and k != "latest_version"), "")
    wanted = (summary.get(key) or {}).get("version")
    deadline = time.monotonic() + poll_seconds * 2 + 10
    served = "no model yet"
    while time.monotonic() < deadline:
        try:
            answer = http_client.shared().get(f"{api_url}/model", timeout=5)
            if answer.status_code == 200:
                served = f"{answer.json()['model_name']} version {answer.json()['model_version']}"
                if wanted is None or str(answer.json()["model_version"]) == str(wanted):
                    return served
        except httpx.HTTPError:
            served = f"not reachable at {api_url}"
        time.sleep(1)
    return served


def _registry(args: argparse.Namespace) -> int:
    from co2.mlflow_utils import RegistryUnavailableError
    from co2.registry import format_listing, list_versions, registry_summary

    settings = get_settings()
    try:
        listing = list_versions(settings, args.limit)
        if args.json:  # what `co2 registry` printed before (newest and production versions), and every version
            versions = listing.to_dict()["versions"]
            print(json.dumps({**registry_summary(settings), "alias": listing.alias, "versions": versions}, indent=2))
        else:
            print(format_listing(listing))
    except RegistryUnavailableError as exc:
        print(f"co2 registry: {exc}", file=sys.stderr)
        return 2
    return 0


def _promote(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from co2.mlflow_utils import RegistryUnavailableError
    from co2.registry import PromotionRefusedError, promote

    settings = get_settings()
    try:
        promotion = promote(settings, args.version, args.reason)
    except (PromotionRefusedError, RegistryUnavailableError) as exc:
        print(f"co2 promote: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:
        print(f"co2 promote: MLflow answered an error: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1
    print(promotion.sentence())
    print(
        f"recorded on version {promotion.version} (co2 registry shows it); the prediction service serves it "
        f"from its next registry poll, within CO2_POLL_SECONDS ({settings.poll_seconds:g} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
