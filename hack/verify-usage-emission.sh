#!/usr/bin/env bash
# Usage emission: the flusher ships records to Polar once each, and reconciliation finds the
# ledger and Polar in agreement.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/metering/test_flusher.py tests/polar/test_reconcile.py tests/cli/test_reconcile.py

say "smoke: usage reaches the local Polar server and reconciles with no drift"
start_polar
start_service
new_org base-plus-usage
run_instance medium 30
api DELETE "/v1/instances/$INSTANCE" >/dev/null
advance 120
pending="$("$ORZ" metering status --json | json .pending)"
[ "$pending" = 0 ] || die "$pending usage records still pending after the flush"
events="$(curl -fsS "$POLAR_API_URL/_control/events/stats?external_customer_id=$ORG&sum=minutes")"
[ "$(printf '%s' "$events" | json .sums.minutes | cut -d. -f1)" = 30 ] \
  || die "Polar holds other minutes than 30: $events"
report="$("$ORZ" polar reconcile --org "$ORG" --period 2000-01-01..2100-01-01 --json)"
[ "$(printf '%s' "$report" | json .drift_minutes)" = 0 ] || die "drift: $report"
[ "$(printf '%s' "$report" | json .totals.matched.minutes)" = 30 ] || die "matched: $report"
ok
