#!/usr/bin/env bash
# Install what is missing (scripts/bootstrap.sh), then run the whole pytest suite; arguments go to pytest,
# e.g. scripts/test.sh tests/ros -x -q   or   scripts/test.sh -m "not slow".
# The exit status is pytest's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# ROS tests talk to nodes on this machine only: keep DDS discovery on loopback, in a domain of their own.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 100 ))}"
cd "$ROOT"
exec python -m pytest "$@"
