#!/usr/bin/env bash
# Install the Debian packages given as arguments, unless they are installed already.
# Needs root; every apt call is bounded in time.
#
#   bash tests/tools/ensure_packages.sh chromium
set -euo pipefail

missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
((${#missing[@]})) || exit 0
[[ $(id -u) == 0 ]] || { echo "ensure_packages: root needed to install ${missing[*]}" >&2; exit 1; }
echo "ensure_packages: installing ${missing[*]}"
timeout -s KILL 300 apt-get update -qq
# Post-install scripts cannot start services here (no init system); callers start them.
DEBIAN_FRONTEND=noninteractive timeout -s KILL 600 \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
