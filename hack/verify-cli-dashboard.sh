#!/usr/bin/env bash
# CLI and dashboard: `orz` commands and views, the dashboard and landing pages, and the CLI
# against a started service.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/cli tests/api

say "smoke: orz cloud billing, its JSON contract, the dashboard and the landing page"
start_service
new_org base-plus-usage
run_instance small 20
view="$("$ORZ" cloud billing)"
grep -q 'Base + Usage' <<<"$view" || die "orz cloud billing: $view"
contract="$("$ORZ" cloud billing --json)"
for field in organization plan hours_used hours_included percent_used in_overage reset_date \
  estimated_bill daily_usage throttle_status; do
  printf '%s' "$contract" | json ".$field" >/dev/null || die "GET /v1/billing lacks $field"
done
curl -fsS "$ORZ_API_URL/dashboard" | grep -qi '<html' || die "no dashboard page"
curl -fsS "$ORZ_API_URL/" | grep -q 'Starts at' || die "no pricing on the landing page"
ok
