"""The Airflow Asset that links the release watcher to the retraining DAG, declared once."""

from __future__ import annotations

from airflow.sdk import Asset

# An event on it means: discodata lists a new EEA car table, or a new version of one. Its `extra`
# holds the newest table of each year, as the watcher saw them (co2.releases.ReleaseCheck).
EEA_RELEASES = Asset(name="eea_co2_cars_releases", uri="https://discodata.eea.europa.eu/md/CO2Emission/latest")
