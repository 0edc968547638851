#!/bin/sh
# Writes .env for docker-compose.yml with generated secrets: the Grafana
# admin password, the query API's admin token and MinIO's root password. Never overwrites a value
# already in .env. The file is readable by its owner only.
set -eu
cd "$(dirname "$0")/.."
umask 077
touch .env
chmod 600 .env
add() {
    if ! grep -q "^$1=" .env; then
        printf '%s=%s\n' "$1" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >> .env
        echo "generated $1 in .env"
    fi
}
add GRAFANA_ADMIN_PASSWORD
add TOLLGATE_ADMIN_TOKEN
add MINIO_ROOT_PASSWORD
echo "Grafana: user admin, password: grep GRAFANA_ADMIN_PASSWORD .env"
