#!/usr/bin/env bash
# Checks the units in this folder with systemd's own tools:
#   systemd-analyze verify   (syntax, references; --man=no until the man
#                             page is installed by a package)
#   systemd-analyze security (exposure must stay at or below 2.0)
# usage: systemd/check.sh PATH_TO_PURGEQ_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
binary="$(realpath "${1:?usage: $0 PATH_TO_PURGEQ_BINARY}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/purgeq.service" "$here/purgeq.socket" "$work/"
# verify insists that ExecStart exists: point it at the built binary.
sed -i "s|/usr/bin/purgeq|$binary|" "$work/purgeq.service"

echo "systemd-analyze verify:"
systemd-analyze verify --man=no "$work/purgeq.socket" "$work/purgeq.service"
echo "  clean"

echo "systemd-analyze security (overall exposure at most 2.0):"
report="$(systemd-analyze security --offline=true "$work/purgeq.service")"
summary="$(printf '%s\n' "$report" | grep 'Overall exposure level')"
echo "  $summary"
exposure="$(printf '%s\n' "$summary" | sed -E 's/.*: ([0-9]+\.[0-9]+).*/\1/')"
if awk -v e="$exposure" 'BEGIN { exit !(e > 2.0) }'; then
  printf '%s\n' "$report"
  echo "exposure $exposure is above 2.0" >&2
  exit 1
fi
