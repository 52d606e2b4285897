#!/usr/bin/env bash
# Installs p3ak the way docs/deploy.md says (binary, man pages, unit), then checks the unit
# with `systemd-analyze verify` and prints its exposure score from `systemd-analyze security`.
# Fails if verify complains or the score rises above the one README.md states.
# Usage: deploy/systemd/check.sh PATH/TO/p3ak   (as root: it installs into /usr/local)
set -euo pipefail
cd "$(dirname "$0")"
bin=${1:?usage: check.sh PATH/TO/p3ak}
max_exposure=2.9

install -D -m 0755 "$bin" /usr/local/bin/p3ak
/usr/local/bin/p3ak man /usr/local/share/man/man1 >/dev/null
install -D -m 0644 p3ak.service /etc/systemd/system/p3ak.service
install -D -m 0644 p3ak.socket /etc/systemd/system/p3ak.socket

# verify prints nothing when the units are clean; anything it prints is a finding.
findings=$(systemd-analyze verify /etc/systemd/system/p3ak.service /etc/systemd/system/p3ak.socket 2>&1) || {
  printf '%s\n' "$findings" >&2
  exit 1
}
if [ -n "$findings" ]; then
  printf 'systemd-analyze verify: %s\n' "$findings" >&2
  exit 1
fi
echo "systemd-analyze verify: p3ak.service and p3ak.socket clean"

report=$(systemd-analyze security --offline=true /etc/systemd/system/p3ak.service 2>&1)
score=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for p3ak.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
  printf '%s\n' "$report" >&2
  echo "systemd-analyze security printed no score" >&2
  exit 1
fi
echo "systemd-analyze security: exposure $score (at most $max_exposure)"
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' || {
  printf '%s\n' "$report" | grep '✗' >&2
  echo "the unit's exposure rose above $max_exposure" >&2
  exit 1
}
