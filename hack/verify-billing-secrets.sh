#!/usr/bin/env bash
# Secrets: the start-up refusal (missing, malformed and the templates' placeholders), the
# Secret templates and manifests, and a service that starts with real-looking secrets.
source "$(dirname "$0")/lib/verify.sh"

run_tests tests/test_config.py tests/deploy/test_manifests.py

say "smoke: the template's placeholder secret is refused, without echoing it"
out="$(BILLING_ENABLED=true POLAR_API_KEY="polar_oat_$(printf 'k%.0s' $(seq 1 40))" \
  POLAR_WEBHOOK_SECRET=REPLACE_WITH_whsec_SECRET "$ORZ" metering flush 2>&1)" \
  && die "a placeholder POLAR_WEBHOOK_SECRET was accepted"
grep -q POLAR_WEBHOOK_SECRET <<<"$out" || die "the refusal does not name the variable: $out"
grep -q REPLACE_WITH <<<"$out" && die "the refusal prints the secret's value"

say "smoke: hack/create-secrets.sh refuses placeholders and fills the templates"
POLAR_API_KEY=REPLACE_WITH_polar_oat_TOKEN hack/create-secrets.sh >/dev/null 2>&1 \
  && die "create-secrets.sh accepted a placeholder"
POLAR_API_KEY="polar_oat_$(printf 'a%.0s' $(seq 1 40))" \
  POLAR_WEBHOOK_SECRET="whsec_$(printf 'b%.0s' $(seq 1 40))" \
  POLAR_ORGANIZATION_ID=3f1c2a9e-7d4b-4c2e-9a51-0b6d8e2f4a17 \
  DATABASE_URL=postgresql+psycopg://u:p@db/orzbob hack/create-secrets.sh \
  | grep -q 'name: polar-credentials' || die "create-secrets.sh did not render the Secret"

say "smoke: the service starts with billing on and answers /readyz"
start_polar
start_service
curl -fsS "$ORZ_API_URL/readyz" | grep -q '"billing":"enabled"' || die "/readyz: billing not enabled"
ok
