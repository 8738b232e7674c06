# Source me (bash or zsh): `source scripts/env.sh` after scripts/bootstrap.sh.
# Activates the venv and overlays the colcon install (mirage_ros interfaces, tf2_msgs fallback, node
# executables), so `import mirage_ros.msg`, `mirage`, and `python -m mirage_ros.node --ros-args ...` work.
# With a ROS 2 installation sourced before this file, the install overlays that installation.
# MIRAGE_ROS_DISTRO=jazzy picks the Jazzy wheels' .venv-jazzy and install-jazzy/ (scripts/distro.sh).

if [ -n "${BASH_SOURCE:-}" ]; then _mirage_env_self="${BASH_SOURCE[0]}"; else _mirage_env_self="${(%):-%x}"; fi
_mirage_root="$(cd "$(dirname "$_mirage_env_self")/.." && pwd)"
. "$_mirage_root/scripts/distro.sh"

if [ -n "$_mirage_distro_error" ]; then
  echo "scripts/env.sh: $_mirage_distro_error" >&2
elif [ ! -f "$_mirage_venv/bin/activate" ]; then
  echo "scripts/env.sh: no virtual environment at $_mirage_venv; run scripts/bootstrap.sh first" >&2
else
  # shellcheck disable=SC1091
  . "$_mirage_venv/bin/activate"
  if [ -z "${ROS_DISTRO:-}" ]; then
    # ROS 2 from wheels: the venv is the underlay (ament index, CMake configs, rmw libraries).
    case ":${AMENT_PREFIX_PATH:-}:" in *":$_mirage_venv:"*) ;; *)
      export AMENT_PREFIX_PATH="$_mirage_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
    export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  fi
  if [ -f "$_mirage_install/local_setup.sh" ]; then
    # colcon's setup scripts read unset variables; relax nounset while sourcing.
    _mirage_nounset=0; case "$-" in *u*) _mirage_nounset=1; set +u ;; esac
    if [ -n "${ZSH_VERSION:-}" ]; then
      . "$_mirage_install/local_setup.zsh"
    elif [ -n "${BASH_VERSION:-}" ]; then
      . "$_mirage_install/local_setup.bash"
    else
      COLCON_CURRENT_PREFIX="$_mirage_install" . "$_mirage_install/local_setup.sh"
    fi
    # colcon leaves an empty entry (= the current directory) at the end of an empty LD_LIBRARY_PATH.
    export LD_LIBRARY_PATH="${LD_LIBRARY_PATH%:}"
    [ "$_mirage_nounset" = 1 ] && set -u
    unset _mirage_nounset
  fi
fi
unset _mirage_env_self _mirage_root _mirage_venv _mirage_build _mirage_install _mirage_logs _mirage_requirements \
  _mirage_distro_error
