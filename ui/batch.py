"""Many cars from a CSV: every row answered, or the row's problem in plain words.

The service answers a whole file or refuses it with each bad row's problems (a 422). The page then sends
the other rows again, so that one bad row does not cost the answers of the others, and shows one table:
the rows as uploaded, each with its answer or its problem.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from co2_model import columns as col
from co2_model.inputs import EXAMPLE_CAR
from ui.service import PredictionService, Refused
from ui.wording import explain, problem, row_of

ANSWER_COLUMNS = ("co2_wltp_g_km", "co2_lower_g_km", "co2_upper_g_km", "method")
PROBLEM = "problem"
# Each round takes out the rows the service named (at most 100 a round): a file with more bad rows than
# that is checked as far as these rounds go, the rest of it is said to be unchecked.
MAX_ROUNDS = 10
UNCHECKED = "not checked: the file has too many bad rows; fix those above and upload it again"


@dataclass
class BatchOutcome:
    """The uploaded rows with their answers (or problems), and the problems as sentences."""

    table: pd.DataFrame | None = None
    problems: list[str] = field(default_factory=list)
    model_version: str | None = None
    answered: int = 0

    def csv(self) -> bytes:
        """The table to download: the uploaded columns, then the answers, the problem and the model version."""
        if self.table is None:
            return b""
        return self.table.assign(model_version=self.model_version or "").to_csv(index=False).encode()


def read_rows(content: bytes) -> pd.DataFrame:
    """The CSV's rows as text, as uploaded (the service parses the same file with pandas the same way)."""
    return pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False, encoding="utf-8-sig")


def template() -> bytes:
    """A CSV to start from: every field the service takes, as columns, and one example car."""
    return pd.DataFrame([EXAMPLE_CAR]).reindex(columns=col.MODEL_INPUT_COLUMNS).to_csv(index=False).encode()


def predict_rows(service: PredictionService, content: bytes, filename: str = "cars.csv") -> BatchOutcome:
    """Every row's answer, or its problem; the file's problems if it cannot be read as cars at all."""
    try:
        rows = read_rows(content)
    except (ValueError, UnicodeDecodeError):
        return _whole_file(service, content, filename)  # the service says what is wrong with it
    names = {col.SOURCE_TO_DOMAIN.get(str(c), str(c)): str(c) for c in rows.columns}  # ours -> the file's
    pending = list(range(len(rows)))  # the rows (0-based) not yet answered nor refused
    answers: dict[int, dict[str, Any]] = {}
    problems: dict[int, list[str]] = {}
    version = None
    body = content
    for _ in range(MAX_ROUNDS):
        result = service.predict_csv(body, filename)
        if not isinstance(result, Refused):
            version = str(result["model_version"])
            answers.update(zip(pending, result["predictions"], strict=True))
            pending = []
            break
        found = [(row, error) for error in result.errors if (row := row_of(error)) is not None]
        if not found or any(row >= len(pending) for row, _ in found):  # about the file, not its rows
            return BatchOutcome(problems=[explain(error, names=names) for error in result.errors])
        for row, error in found:
            index = pending[row]
            values = {col.SOURCE_TO_DOMAIN.get(str(c), str(c)): v for c, v in rows.iloc[index].items()}
            problems.setdefault(index, []).append(problem(error, values, names))
        pending = [index for index in pending if index not in problems]
        if not pending:
            break
        body = rows.iloc[pending].to_csv(index=False).encode()
    for index in pending:
        problems[index] = [UNCHECKED]
    table = rows.copy()
    for name in ANSWER_COLUMNS:
        table[name] = [answers.get(index, {}).get(name) for index in range(len(rows))]
    table[PROBLEM] = ["; ".join(problems.get(index, [])) for index in range(len(rows))]
    return BatchOutcome(
        table=table,
        problems=[f"row {index + 1}: {text}" for index in sorted(problems) for text in problems[index]],
        model_version=version,
        answered=len(answers),
    )


def _whole_file(service: PredictionService, content: bytes, filename: str) -> BatchOutcome:
    """A file the page cannot read as a table: the service's answers alone, or its problems."""
    result = service.predict_csv(content, filename)
    if isinstance(result, Refused):
        return BatchOutcome(problems=[explain(error) for error in result.errors])
    table = pd.DataFrame(result["predictions"])
    return BatchOutcome(table=table, model_version=str(result["model_version"]), answered=len(table))
