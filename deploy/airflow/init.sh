#!/usr/bin/env bash
# airflow-init: once per `docker compose up`, before any other Airflow service starts.
# Refuses the placeholders of .env.example, migrates the metadata database and writes the admin's
# password where the API server's SimpleAuthManager reads it (the auth volume; never in an image).
set -euo pipefail

for name in AIRFLOW_ADMIN_PASSWORD AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY \
  POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD GRAFANA_ADMIN_PASSWORD; do
  value="${!name:-}"
  if [[ -z "$value" || "$value" == "change-me" ]]; then
    echo "airflow-init: $name is empty or still the placeholder of .env.example; set it in .env" >&2
    exit 1
  fi
done
: "${AIRFLOW_ADMIN_USER:?set AIRFLOW_ADMIN_USER in .env}"

umask 0007
python - <<'PY'
import json
import os

with open(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"], "w") as file:
    json.dump({os.environ["AIRFLOW_ADMIN_USER"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, file)
PY
airflow db migrate
