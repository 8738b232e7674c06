#!/usr/bin/env bash
# The README's main command: install what is missing (scripts/bootstrap.sh), then run the ROS demo on the
# embedded default (mirage-tiny on the CPU): synthetic RGB-D camera -> mirage node -> ImagineTrajectory goal.
# Writes imagined frames (PNG + MP4), a side-by-side with the ground truth, the memory (safetensors + PLY) and
# the published cloud to outputs/demo (or --out DIR). Other arguments go to python -m mirage_ros.demo_client.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
# The demo's nodes talk on this machine only: DDS discovery on loopback, in a domain of their own.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 100 ))}"
cd "$ROOT"
case " $* " in
  *" --out "*) exec python -m mirage_ros.demo_client "$@" ;;
  *) exec python -m mirage_ros.demo_client --out outputs/demo "$@" ;;
esac
