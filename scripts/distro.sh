# Sourced by scripts/bootstrap.sh and scripts/env.sh (bash or zsh), with _mirage_root set to the repository:
# which ROS 2 distribution's PyPI wheels to use, and where its venv, requirements and colcon directories are.
#
#   MIRAGE_ROS_DISTRO=kilted (default): .venv, requirements-ros.txt, build/ install/ log/
#   MIRAGE_ROS_DISTRO=jazzy:            .venv-jazzy, requirements-ros-jazzy.txt, build-jazzy/ install-jazzy/ log-jazzy/
#
# so both coexist in one checkout. MIRAGE_VENV still names the venv. Sets _mirage_venv, _mirage_build,
# _mirage_install, _mirage_logs and _mirage_requirements; on an unknown distribution they are empty and
# _mirage_distro_error says why.
_mirage_distro_error=""
case "${MIRAGE_ROS_DISTRO:-kilted}" in
  kilted) _mirage_suffix="" ;;
  jazzy) _mirage_suffix="-jazzy" ;;
  *) _mirage_suffix=""
     _mirage_distro_error="MIRAGE_ROS_DISTRO must be kilted or jazzy, got '${MIRAGE_ROS_DISTRO}'" ;;
esac
if [ -z "$_mirage_distro_error" ]; then
  _mirage_venv="${MIRAGE_VENV:-$_mirage_root/.venv$_mirage_suffix}"
  _mirage_build="$_mirage_root/build$_mirage_suffix"
  _mirage_install="$_mirage_root/install$_mirage_suffix"
  _mirage_logs="$_mirage_root/log$_mirage_suffix"
  _mirage_requirements="requirements-ros$_mirage_suffix.txt"
else
  _mirage_venv="" _mirage_build="" _mirage_install="" _mirage_logs="" _mirage_requirements=""
fi
unset _mirage_suffix
