#!/usr/bin/env bash
# Installs what `pip install` needs to build Switchboard's compiled modules
# (media/_rtpsend.c, signaling/_fanout.c): a C compiler and the headers of the Python the
# venv is made from. Without them the install still succeeds and the node uses the
# pure-Python writers (a warning at start); `make test` needs both ways, so it runs this.
# Debian/Ubuntu; as root, or through sudo.
set -euo pipefail
python="${1:-python3}"
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
"$python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        # `make run` still works: the install skips the compiled modules.
        echo "warning: cannot install ${missing[*]} (not root, no sudo): the pure-Python writers will be used" >&2
        exit 0
    fi
    sudo="sudo"
fi
echo "installing build packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
