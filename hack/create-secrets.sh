#!/usr/bin/env bash
# Fill the Secret templates under deploy/ from the environment and print the manifests
# (or apply them with --apply). Never writes a secret to disk; refuses missing values and
# the templates' own placeholders.
#
#   POLAR_API_KEY=polar_oat_... POLAR_WEBHOOK_SECRET=whsec_... POLAR_ORGANIZATION_ID=<uuid> \
#   DATABASE_URL=postgresql+psycopg://... SMTP_USERNAME=... SMTP_PASSWORD=... \
#   hack/create-secrets.sh [--apply]
set -euo pipefail
cd "$(dirname "$0")/.."

apply=false
case "${1:-}" in
  --apply) apply=true ;;
  "") ;;
  *) echo "usage: $0 [--apply]" >&2; exit 64 ;;
esac

# The seed called the organization POLAR_PROJECT_ID; both are accepted.
POLAR_ORGANIZATION_ID="${POLAR_ORGANIZATION_ID:-${POLAR_PROJECT_ID:-}}"
SMTP_USERNAME="${SMTP_USERNAME-}"
SMTP_PASSWORD="${SMTP_PASSWORD-}"

missing=0
for var in POLAR_API_KEY POLAR_WEBHOOK_SECRET POLAR_ORGANIZATION_ID DATABASE_URL; do
  value="${!var:-}"
  if [ -z "$value" ]; then
    echo "error: $var is not set" >&2; missing=1
  elif printf '%s' "$value" | grep -qiE 'replace|changeme|placeholder|<|>'; then
    echo "error: $var still holds a placeholder" >&2; missing=1
  fi
done
[ "$missing" = 0 ] || exit 1

# A YAML double-quoted scalar: backslashes and quotes escaped, nothing else interpreted.
quote() { local v=${1//\\/\\\\}; v=${v//\"/\\\"}; printf '"%s"' "$v"; }

render() {
  cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: polar-credentials
  namespace: orzbob-system
type: Opaque
stringData:
  POLAR_API_KEY: $(quote "$POLAR_API_KEY")
  POLAR_WEBHOOK_SECRET: $(quote "$POLAR_WEBHOOK_SECRET")
  POLAR_ORGANIZATION_ID: $(quote "$POLAR_ORGANIZATION_ID")
---
apiVersion: v1
kind: Secret
metadata:
  name: orzbob-app
  namespace: orzbob-system
type: Opaque
stringData:
  DATABASE_URL: $(quote "$DATABASE_URL")
  SMTP_USERNAME: $(quote "$SMTP_USERNAME")
  SMTP_PASSWORD: $(quote "$SMTP_PASSWORD")
YAML
}

if $apply; then
  render | kubectl apply -f -
else
  render
fi
