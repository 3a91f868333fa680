#!/bin/bash
# One database and one login role per service, each owning its database and nothing else.
# The postgres image runs this once, on the first start of an empty data volume
# (/docker-entrypoint-initdb.d). It is idempotent, so it can also be run by hand against an
# existing server:  PGHOST=... PGUSER=postgres REFERRALS_DB_PASSWORD=... bash init-databases.sh
#
# Passwords: <SERVICE>_DB_PASSWORD (REFERRALS_DB_PASSWORD, PARTNERS_DB_PASSWORD, ...), required.
# ENSEMBLE_DB_SERVICES overrides the list (default: the five services).
set -euo pipefail

services=${ENSEMBLE_DB_SERVICES:-"referrals partners engagement notifications webhooks insights"}

for svc in $services; do
  var="${svc^^}_DB_PASSWORD"
  password="${!var:?$var must be set}"
  # psql variables quote safely: :"name" as an identifier, :'value' as a literal.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-${PGUSER:-postgres}}" \
       --dbname "${POSTGRES_DB:-${PGDATABASE:-postgres}}" \
       -v svc="$svc" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'svc')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'svc') \gexec
ALTER ROLE :"svc" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'svc', :'svc')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'svc') \gexec
-- Nobody but the owner connects or creates objects in a service's database.
REVOKE ALL ON DATABASE :"svc" FROM PUBLIC;
SQL
  echo "init-databases: database and role '$svc' ready"
done
