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
alerts="$(api GET /v1/billing/alerts)"
grep -q '50' <<<"$alerts" || die "no 50 % alert: $alerts"
ok
