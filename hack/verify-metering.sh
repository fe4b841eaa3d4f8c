#!/usr/bin/env bash
# Metering: segments, checkpoints and usage records, and a running instance metered by the
# minute through a started service.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/metering/test_segments.py tests/instances

say "smoke: 10 minutes and 30 seconds of a small instance are 11 minutes"
start_service
new_org base-plus-usage
id="$(api POST /v1/instances '{"tier": "small"}' | json .id)"
advance 240; api POST "/v1/instances/$id/heartbeat" '{"active": true}' >/dev/null
advance 240; api POST "/v1/instances/$id/heartbeat" '{"active": true}' >/dev/null
advance 150; api POST "/v1/instances/$id/heartbeat" '{"active": true}' >/dev/null
api DELETE "/v1/instances/$id" >/dev/null
minutes="$(api GET /v1/billing | json .tiers | "$PY" -c '
import json, sys; print(sum(t["minutes"] for t in json.load(sys.stdin) if t["tier"] == "small"))')"
[ "$minutes" = 11 ] || die "expected 11 metered minutes, got $minutes"
"$ORZ" metering status --json | json .pending >/dev/null
ok
