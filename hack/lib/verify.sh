# Shared by hack/verify-*.sh: run tests, start a throw-away service (SQLite, test clock,
# optionally the local Polar server) on free ports, drive it, and clean up on exit.
# Source it; every helper fails the script (set -e) with a message on stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
ORZ="${ORZ:-$ROOT/.venv/bin/orz}"
[ -x "$PY" ] || { echo "verify: $PY missing; run 'make install' first" >&2; exit 2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/orzbob-verify.XXXXXX")"
PIDS=()
NAME="$(basename "$0" .sh)"

cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { printf '%s: FAILED: %s\n' "$NAME" "$*" >&2; exit 1; }

run_tests() {
  say "tests: $*"
  # The tests set up their own databases and settings: none of the smoke run's environment.
  env -u DATABASE_URL -u ORZBOB_TEST_CLOCK -u ORZBOB_ENV -u BILLING_ENABLED -u POLAR_API_URL \
    -u POLAR_API_KEY -u POLAR_WEBHOOK_SECRET -u ORZ_API_URL -u ORZ_TOKEN -u ORZ_STAFF_TOKEN \
    -u ORZBOB_PORT -u ORZBOB_HOST -u XDG_CONFIG_HOME \
    "$PY" -m pytest -q -p no:cacheprovider "$@" || die "tests failed: $*"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() {  # URL [seconds]
  local i
  for i in $(seq 1 $(( ${2:-30} * 10 ))); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "nothing answered at $1"
}

# The environment every `orz` call of the smoke run uses.
export DATABASE_URL="sqlite:///$WORK/orzbob.db"
export ORZBOB_TEST_CLOCK=true
export ORZBOB_ENV=development
export XDG_CONFIG_HOME="$WORK/config"
export ORZ_TOKEN="" ORZ_STAFF_TOKEN=""
unset POLAR_API_KEY POLAR_WEBHOOK_SECRET POLAR_ORGANIZATION_ID POLAR_PROJECT_ID 2>/dev/null || true
export BILLING_ENABLED=false

start_polar() {  # the local Polar-compatible server; billing on
  local port; port="$(free_port)"
  "$ORZ" polar serve-local --port "$port" --db "$WORK/polar.db" --accept-future-timestamps \
    >"$WORK/polar.log" 2>&1 &
  PIDS+=("$!")
  export POLAR_API_URL="http://127.0.0.1:$port"
  export POLAR_API_KEY="polar_oat_verify$(printf 'v%.0s' $(seq 1 32))"
  export POLAR_WEBHOOK_SECRET="whsec_verify$(printf 'w%.0s' $(seq 1 32))"
  export BILLING_ENABLED=true
  wait_for "$POLAR_API_URL/_control/health"
  "$ORZ" polar sync >/dev/null || die "orz polar sync against the local server"
}

start_service() {  # orz server on a free port, schema migrated; sets ORZ_API_URL
  local port; port="$(free_port)"
  export ORZBOB_PORT="$port" ORZBOB_HOST=127.0.0.1
  export ORZ_API_URL="http://127.0.0.1:$port"
  "$ORZ" db upgrade >/dev/null
  "$ORZ" server >"$WORK/server.log" 2>&1 &
  PIDS+=("$!")
  wait_for "$ORZ_API_URL/readyz" 60 || { cat "$WORK/server.log" >&2; exit 1; }
  ORZ_STAFF_TOKEN="$("$ORZ" admin staff-token create --role engineering --json | json .token)"
  export ORZ_STAFF_TOKEN
}

json() {  # json .a.b < document: one field, printed as text
  "$PY" -c '
import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1].strip(".").split("."):
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value if not isinstance(value, (dict, list)) else json.dumps(value))' "$1"
}

new_org() {  # new_org PLAN -> sets ORG and ORZ_TOKEN (an admin token of the org)
  local created
  created="$("$ORZ" admin org create --name "Verify $1" --email "ops@verify.test" --plan "$1" --json)"
  ORG="$(printf '%s' "$created" | json .org_id)"
  ORZ_TOKEN="$(printf '%s' "$created" | json .token)"
  export ORG ORZ_TOKEN
}

api() {  # api METHOD PATH [JSON] with the org token; prints the body, fails on >= 400
  local body
  body="$(curl -sS -X "$1" -H "Authorization: Bearer $ORZ_TOKEN" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} -w '\n%{http_code}' "$ORZ_API_URL$2")"
  local code="${body##*$'\n'}"
  [ "$code" -lt 400 ] || die "$1 $2 answered $code: ${body%$'\n'*}"
  printf '%s\n' "${body%$'\n'*}"
}

staff() {  # staff METHOD PATH [JSON] with the staff token
  ORZ_TOKEN="$ORZ_STAFF_TOKEN" api "$@"
}

advance() {  # advance SECONDS of test-clock time (every periodic job runs as it would)
  staff POST /v1/test-clock/advance "{\"seconds\": $1}" >/dev/null
}

run_instance() {  # run_instance TIER MINUTES: beats every 4 min so it is never timed out
  local id left step
  id="$(api POST /v1/instances "{\"tier\": \"$1\"}" | json .id)"
  left=$(( $2 * 60 ))
  while [ "$left" -gt 0 ]; do
    step=$(( left < 240 ? left : 240 ))
    api POST "/v1/instances/$id/heartbeat" '{"active": true}' >/dev/null
    advance "$step"
    left=$(( left - step ))
  done
  INSTANCE="$id"
}

ok() { say "OK"; }
