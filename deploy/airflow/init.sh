#!/usr/bin/env bash
# airflow-init: once per `docker compose up`, before any other Airflow service (and the API) starts.
# Refuses the placeholders of .env.example, migrates the metadata database and creates the
# administrator of the FAB auth manager with the Admin role, or, when it exists, sets its password to
# .env's. Other users (Viewer, User, Op) are added with `airflow users create`, see the README.
# The password reaches Airflow on stdin, never on a command line other processes could read.
set -euo pipefail

fail() {
  echo "airflow-init: $*" >&2
  exit 1
}

for name in AIRFLOW_ADMIN_PASSWORD AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY \
  POSTGRES_PASSWORD AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD GRAFANA_ADMIN_PASSWORD REGISTRY_WEBHOOK_SECRET \
  MLFLOW_WEBHOOK_ENCRYPTION_KEY; do
  value="${!name:-}"
  if [[ -z "$value" || "$value" == "change-me" ]]; then
    fail "$name is empty or still the placeholder of .env.example; set it in .env"
  fi
done
if [[ -z "${API_KEYS:-}" || "$API_KEYS" == *change-me* ]]; then
  fail "API_KEYS is empty or still holds the placeholder of .env.example; set it in .env"
fi
: "${AIRFLOW_ADMIN_USER:?set AIRFLOW_ADMIN_USER in .env}"
if [[ "${AIRFLOW__CORE__AUTH_MANAGER:-}" != *.FabAuthManager ]]; then
  fail "AIRFLOW__CORE__AUTH_MANAGER is '${AIRFLOW__CORE__AUTH_MANAGER:-}', not FAB's FabAuthManager, whose users this creates"
fi

airflow db migrate

password_twice() {
  printf '%s\n%s\n' "$AIRFLOW_ADMIN_PASSWORD" "$AIRFLOW_ADMIN_PASSWORD"
}
if ! created=$(password_twice | airflow users create --username "$AIRFLOW_ADMIN_USER" --role Admin \
  --email "${AIRFLOW_ADMIN_EMAIL:-admin@example.org}" --firstname Airflow --lastname Admin 2>&1); then
  echo "$created" >&2
  fail "could not create the administrator $AIRFLOW_ADMIN_USER"
fi
if grep -q "already exist" <<<"$created"; then
  password_twice | airflow users reset-password --username "$AIRFLOW_ADMIN_USER" >/dev/null
  echo "airflow-init: administrator $AIRFLOW_ADMIN_USER exists; its password is AIRFLOW_ADMIN_PASSWORD's"
else
  echo "airflow-init: administrator $AIRFLOW_ADMIN_USER created with the Admin role"
fi
