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
# Large images over DDS: Fast DDS's default 512 KB shared-memory segment loses RGB-D between processes; load the
# shipped profile (64 MiB) unless the user chose a profile or another middleware (README: "Large images over DDS").
case "${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}" in
  rmw_fastrtps*)
    if [ -z "${FASTDDS_DEFAULT_PROFILES_FILE:-}${FASTRTPS_DEFAULT_PROFILES_FILE:-}" ]; then
      export FASTDDS_DEFAULT_PROFILES_FILE="$ROOT/config/fastdds_large_data.xml"
      # Fast DDS 2 (Humble, Iron, Jazzy) reads only the old name; Fast DDS 3 warns about it
      case "${ROS_DISTRO:-}" in humble|iron|jazzy) export FASTRTPS_DEFAULT_PROFILES_FILE="$FASTDDS_DEFAULT_PROFILES_FILE" ;; esac
      echo "demo: FASTDDS_DEFAULT_PROFILES_FILE=$FASTDDS_DEFAULT_PROFILES_FILE"
    else
      echo "demo: keeping the Fast DDS profile you set: ${FASTDDS_DEFAULT_PROFILES_FILE:-$FASTRTPS_DEFAULT_PROFILES_FILE}"
    fi ;;
  *) echo "demo: RMW_IMPLEMENTATION=$RMW_IMPLEMENTATION; the Fast DDS profile does not apply" ;;
esac
cd "$ROOT"
case " $* " in
  *" --out "*) exec python -m mirage_ros.demo_client "$@" ;;
  *) exec python -m mirage_ros.demo_client --out outputs/demo "$@" ;;
esac
