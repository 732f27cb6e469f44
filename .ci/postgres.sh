#!/usr/bin/env bash
# Installs (when absent) and starts a local PostgreSQL server, and creates the role and database the tests use.
# Idempotent: safe to run on a machine where it already ran. Prints the URL to export as SPINDLE_TEST_POSTGRES_URL.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages" >&2
  as_root apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
if [ -z "$version" ]; then
  echo "no PostgreSQL cluster found under /etc/postgresql" >&2
  exit 1
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online" { found = 1 } END { exit !found }'; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2
fi

for _ in $(seq 1 30); do
  if as_root su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 1
done

as_root su postgres -c "psql -qAt" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'spindle') THEN
    CREATE ROLE spindle LOGIN PASSWORD 'spindle';
  END IF;
END $$;
SELECT 'CREATE DATABASE spindle_test OWNER spindle'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'spindle_test') \gexec
SQL

echo "postgres://spindle:spindle@127.0.0.1:5432/spindle_test"
