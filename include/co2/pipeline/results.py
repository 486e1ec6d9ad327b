"""What each step of the retraining returns and the next one receives, declared once.

Plain dataclasses: Airflow 3 passes them between tasks as XCom and rebuilds them on the way in, for
the classes it is allowed to (`STEP_RESULTS`, registered by the DAG file). Standard library only:
the DAG file imports this module when it is parsed. A nested dataclass would come back as a dict,
so a field that holds another result holds its `to_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiscoverResult:
    discovery: dict[str, Any]  # co2.releases.Discovery.to_dict()
    retrain: bool
    reason: str  # why the run trains, or why it stops here
    production_version: str | None
    source_url: str = ""  # the discodata service the run reads (empty: CO2_DISCODATA_URL)


@dataclass(frozen=True)
class DownloadResult:
    snapshot_path: str
    metadata_path: str
    rows: int
    registrations: int
    sha256: str


@dataclass(frozen=True)
class ValidationResult:
    passed: bool
    report_path: str  # every check with its numbers
    rows: int
    failures: int
    snapshot_path: str = ""  # the snapshot it passed


@dataclass(frozen=True)
class PreprocessResult:
    train_path: str
    test_path: str
    lineage_path: str
    train_rows: int
    test_rows: int
    train_registrations: int
    test_registrations: int


@dataclass(frozen=True)
class Candidate:
    family: str
    with_make: bool
    run_id: str
    model_uri: str
    mae_g_km: float
    rmse_g_km: float
    r2: float
    train_seconds: float
    backtest_mae_g_km: float | None = None
    predictions_path: str = ""  # its WLTP CO2 for each car of the test split, in the split's order

    @property
    def name(self) -> str:
        return f"{self.family}{'_with_make' if self.with_make else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


@dataclass(frozen=True)
class CompareResult:
    winner: dict[str, Any]  # Candidate.to_dict()
    promote: bool
    reason: str
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    report_path: str
    ranking: list[dict[str, Any]] = field(default_factory=list)  # Candidate.to_dict(), best first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegisterResult:
    model_name: str
    version: str
    promoted: bool
    reason: str
    alias: str
    production_version: str | None
    previous_production_version: str | None
    metrics: dict[str, float]
    decision: str = ""  # the sentence the task log shows


@dataclass(frozen=True)
class ReportResult:
    run_id: str
    artifact_uri: str
    figures: list[str]
    shifted: list[str] = field(default_factory=list)  # inputs whose PSI says "shifted", most first
    reference: str = ""  # what the shift was measured against
    seconds: float = 0.0


STEP_RESULTS: tuple[type, ...] = (
    DiscoverResult,
    DownloadResult,
    ValidationResult,
    PreprocessResult,
    Candidate,
    CompareResult,
    RegisterResult,
    ReportResult,
)
