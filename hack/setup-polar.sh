#!/usr/bin/env bash
# Create or update Polar's meters and products to match the catalog, against the Polar
# configured in the environment (POLAR_API_URL, POLAR_API_KEY): a dry run first, then the
# real sync once confirmed (or straight away with --yes).
set -euo pipefail
cd "$(dirname "$0")/.."
ORZ="${ORZ:-orz}"
command -v "$ORZ" >/dev/null 2>&1 || ORZ=.venv/bin/orz

yes=false
case "${1:-}" in
  --yes|-y) yes=true ;;
  "") ;;
  *) echo "usage: $0 [--yes]" >&2; exit 64 ;;
esac

echo "Polar at ${POLAR_API_URL:-<default>}: what would change"
"$ORZ" polar sync --dry-run
if ! $yes; then
  read -r -p "Apply these changes? [y/N] " answer || answer=""
  case "$answer" in y|Y|yes) ;; *) echo "nothing changed"; exit 0 ;; esac
fi
"$ORZ" polar sync
echo "Polar matches the catalog; a second dry run shows no changes:"
"$ORZ" polar sync --dry-run
