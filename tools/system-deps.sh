#!/usr/bin/env bash
# Installs the system programs the test suite runs for real, where they are missing:
# coturn (turnserver, turnutils_uclient), redis-server, Chromium for the browser tests, and
# for the benchmarks' quick runs Node.js with npm (the Socket.IO peer) and Janus (VideoRoom),
# and for the network lab (tests/netlab) iproute2 (ip, tc) and nftables.
# Debian/Ubuntu; as root, or through sudo.
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need turnserver coturn
need turnutils_uclient coturn
need chromium chromium
need redis-server redis-server
need node nodejs
need npm npm
need janus janus
need ip iproute2
need tc iproute2
need nft nftables
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u)
