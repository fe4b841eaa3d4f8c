#!/usr/bin/env bash
# Budget alerts: thresholds, once-only delivery, and an alert raised when usage crosses 50 %
# of the allowance on a started service.
source "$(dirname "$0")/lib/verify.sh"

[ -d tests/alerts ] || die "tests/alerts is missing: the budget alert domain is not in this tree"
run_tests tests/alerts

say "smoke: 4 gpu hours (100 of 200 small-hours) raise the 50 % alert"
start_service
new_org base-plus-usage
run_instance gpu 240
api DELETE "/v1/instances/$INSTANCE" >/dev/null   # the stop records the last minutes
alerts="$(api GET /v1/billing/alerts)"
printf '%s' "$alerts" | "$PY" -c '
import json, sys
alerts = json.load(sys.stdin)["alerts"]
assert [a["threshold"] for a in alerts] == [50], alerts' || die "expected one 50 % alert: $alerts"
ok
