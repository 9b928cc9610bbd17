#!/usr/bin/env bash
# Installs the command-line tools the tests use, when missing (idempotent):
#   promtool (Debian package `prometheus`) to check metrics scrapes and the
#   alerting rules in deploy/prometheus.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo; then sudo=(sudo); else
            echo "tools.sh: need root (or sudo) to install $*" >&2
            return 1
        fi
    fi
    # A stale package index is the usual reason an install fails.
    # ${sudo[@]+...}: an empty array is "unbound" to bash before 4.4 under set -u.
    if ! ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; then
        ${sudo[@]+"${sudo[@]}"} apt-get update
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    fi
}

if have promtool; then
    echo "promtool: $(promtool --version 2>&1 | head -1)"
elif have apt-get; then
    echo "promtool: installing the Debian package prometheus"
    apt_install prometheus
    promtool --version 2>&1 | head -1
else
    echo "tools.sh: promtool is missing and apt-get is not available; install Prometheus's promtool" >&2
    exit 1
fi
