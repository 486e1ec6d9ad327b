"""The local platform (`co2 up`) as a user runs it: the `co2` command in subprocesses, on loopback ports,
with Airflow and MLflow on PostgreSQL databases the session creates and drops; its pages in a real
Chromium (Debian's chromium and chromium-driver), screenshots kept under test-artifacts/platform/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from co2.local import free_port
from co2.stack import AirflowClient, StackState
from tests.conftest import PROJECT_DIR

CO2 = str(Path(sys.executable).parent / "co2")
SCREENSHOTS = PROJECT_DIR / "test-artifacts" / "platform"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1000",
    # no name resolves but loopback: a page that needs the internet shows it, as on an offline machine
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


@dataclass
class LocalPlatform:
    """A `CO2_HOME` and the environment every `co2` command of the test runs with."""

    home: Path
    env: dict[str, str]

    def co2(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [CO2, *args], env=self.env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=timeout
        )
        if check and completed.returncode != 0:
            raise AssertionError(
                f"co2 {' '.join(args)} exited {completed.returncode}\n{completed.stdout}\n{completed.stderr[-4000:]}"
            )
        return completed

    @property
    def info(self) -> dict[str, Any]:
        return StackState.load(self.home).info

    def running(self) -> dict[str, int]:
        return {name: r.pid for name, r in StackState.load(self.home).running.items() if r.alive()}

    def airflow(self) -> AirflowClient:
        """Logged in as a REST client would: the admin password `co2 up` printed, a JWT from /auth/token."""
        password = json.loads((self.home / "secrets.json").read_text())["admin_password"]
        return AirflowClient(self.info["airflow_url"], self.info["airflow_user"], password)

    def served_version(self) -> str | None:
        answer = httpx.get(f"{self.info['api_url']}/model", timeout=5)
        return str(answer.json()["model_version"]) if answer.status_code == 200 else None

    def processes_of_home(self) -> list[str]:
        """Every process on the machine whose command line or environment names this CO2_HOME."""
        import psutil

        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                text = " ".join(process.info["cmdline"] or [])
                if str(self.home) in text or process.environ().get("CO2_HOME") == str(self.home):
                    found.append(f"{process.pid} {text[:120]}")
            except psutil.Error:
                continue
        return found


def _clean_environment() -> dict[str, str]:
    """The test process's environment without the Airflow, MLflow and co2 settings of the test session."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "CO2_", "MLFLOW_", "PYTEST_")) and k != "PYTHONPATH"
    }


@pytest.fixture(scope="session")
def local_platform(postgres_database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:  # type: ignore[no-untyped-def]
    """A platform home on PostgreSQL with free ports; `co2 down` at the end whatever happened."""
    home = tmp_path_factory.mktemp("co2-home")
    env = {
        **_clean_environment(),
        "CO2_HOME": str(home),
        "CO2_AIRFLOW_DATABASE_URL": postgres_database("platform_airflow"),
        "CO2_MLFLOW_DATABASE_URL": postgres_database("platform_mlflow"),
        "CO2_CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
        "CO2_POLL_SECONDS": "2",
        "CO2_AIRFLOW_PORT": str(free_port()),
        "CO2_MLFLOW_PORT": str(free_port()),
        "CO2_API_PORT": str(free_port()),
        "CO2_UI_PORT": str(free_port()),
        "CO2_EMULATOR_PORT": str(free_port()),
        "CO2_PROMETHEUS_PORT": str(free_port()),
        "CO2_ALERTMANAGER_PORT": str(free_port()),
        "CO2_STATSD_PORT": str(free_port()),
        "CO2_STATSD_EXPORTER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # a killed task is noticed after 20 s instead of 60 s
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        # a retry waits 5 s instead of the DAG's 1-2 min backoff (Airflow caps every backoff at this)
        "AIRFLOW__CORE__MAX_TASK_RETRY_DELAY": "5",
    }
    platform = LocalPlatform(home, env)
    yield platform
    platform.co2("down", check=False)
    import redis

    redis.Redis.from_url(env["CO2_CELERY_BROKER_URL"]).flushdb()


class Browser:
    """Chromium driven by chromedriver, with its network log; `shot` keeps a screenshot as a test artifact."""

    def __init__(self, profile: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
        assert chromium and driver, "chromium and chromedriver are missing: `make tools` installs them"
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(driver), options=options)
        self.driver.set_page_load_timeout(60)

    def open(self, url: str) -> None:
        self.requested()  # forget what earlier pages asked for
        self.driver.get(url)

    def wait(self, condition: Any, seconds: float = 60) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, seconds, poll_frequency=0.25).until(condition)

    def wait_for_text(self, *texts: str, seconds: float = 60) -> str:
        """The page's visible text once it shows every one of `texts`."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By

        def shown(driver: Any) -> str | bool:
            body = str(driver.find_element(By.TAG_NAME, "body").text)
            return body if all(text in body for text in texts) else False

        try:
            return str(self.wait(shown, seconds))
        except TimeoutException:
            self.shot("timeout")
            body = self.driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"{self.driver.current_url} never showed {texts}; it shows:\n{body[:3000]}") from None

    def requested(self) -> list[str]:
        """The URLs the browser asked for since the last call (Chrome's performance log)."""
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    chromium = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.quit()
