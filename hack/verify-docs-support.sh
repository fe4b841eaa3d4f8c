#!/usr/bin/env bash
# Docs and support: runbook commands, pricing examples, credits within the role limits, and
# the reconciliation report staff read, on a started service.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/docs tests/credits/test_credits.py

say "smoke: support_l1 grants \$50.00 but not \$50.01; the reconciliation report is served"
start_polar
start_service
new_org base-plus-usage
l1="$("$ORZ" admin staff-token create --role support_l1 --json | json .token)"
ORZ_STAFF_TOKEN="$l1" "$ORZ" support credit grant --org "$ORG" --amount 50.00 \
  --reason "verify: within the L1 limit" >/dev/null || die "L1 could not grant \$50.00"
ORZ_STAFF_TOKEN="$l1" "$ORZ" support credit grant --org "$ORG" --amount 50.01 \
  --reason "verify: above the L1 limit" >/dev/null 2>&1 && die "L1 granted \$50.01"
"$ORZ" support billing --org "$ORG" >/dev/null || die "orz support billing"
"$ORZ" polar reconcile --org "$ORG" >/dev/null || die "orz polar reconcile"
staff GET /v1/admin/reconcile/latest | json .status | grep -q ok || die "no kept report"
ok
