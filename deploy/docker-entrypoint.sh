#!/bin/sh
# Init step, then the command: the schema is brought up to date (`orz db upgrade` is
# idempotent and serialised by an advisory lock on PostgreSQL) before the service starts.
set -eu
if [ "${ORZBOB_SKIP_DB_UPGRADE:-false}" != "true" ]; then
  orz db upgrade
fi
exec "$@"
