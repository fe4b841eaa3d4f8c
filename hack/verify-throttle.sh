#!/usr/bin/env bash
# Throttle: the caps, the sweep and upcoming-cap warnings, and an idle instance paused by the
# cap sweep on a started service.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/throttle

say "smoke: a Free Tier instance with no activity pauses after its 30-minute idle timeout"
start_service
new_org free-tier
id="$(api POST /v1/instances '{"tier": "small"}' | json .id)"
for _ in $(seq 1 8); do
  api POST "/v1/instances/$id/heartbeat" '{"active": false}' >/dev/null
  advance 240
done
state="$(api GET "/v1/instances/$id")"
[ "$(printf '%s' "$state" | json .state)" = paused ] || die "not paused: $state"
[ "$(printf '%s' "$state" | json .reason)" = idle ] || die "paused for another reason: $state"
ok
