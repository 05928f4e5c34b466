#!/bin/sh
# Runs once, when the postgres volume is first initialised: Keycloak keeps its data in a database of its
# own on the same server (KC_DB_URL in docker-compose.yml), owned by the same role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE DATABASE keycloak OWNER "$POSTGRES_USER";
SQL
