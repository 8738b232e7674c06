#!/usr/bin/env bash
# Set up everything mirage needs, idempotently: a virtual environment at .venv with the library, the test
# tools and (without a sourced ROS 2) ROS 2 Kilted from PyPI wheels, then the ROS interfaces built by colcon
# into install/. A second run with nothing changed returns in about a second.
#
#   scripts/bootstrap.sh [--verbose] [--force]
#
# Environment: MIRAGE_VENV (default <repo>/.venv), MIRAGE_PYTHON (interpreter that creates the venv; default
# python3.11, else python3), MIRAGE_SKIP_ROS=1 (library only), MIRAGE_ROS_DISTRO (which ROS 2 wheels: kilted,
# the default, or jazzy: requirements-ros-jazzy.txt into .venv-jazzy, built into build-jazzy/ install-jazzy/,
# the Kilted ones untouched). With ROS_DISTRO set (a sourced ROS 2 installation) no ROS wheels are installed
# and colcon builds against that installation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_mirage_root="$ROOT"
# shellcheck source=scripts/distro.sh
. "$ROOT/scripts/distro.sh"  # MIRAGE_ROS_DISTRO -> the venv, requirements and colcon directories
[ -z "$_mirage_distro_error" ] || { echo "bootstrap: ERROR: $_mirage_distro_error" >&2; exit 2; }
MIRAGE_ROS_DISTRO="${MIRAGE_ROS_DISTRO:-kilted}"
VENV="$_mirage_venv" BUILD="$_mirage_build" INSTALL="$_mirage_install" LOGS="$_mirage_logs"
ROS_REQUIREMENTS="$_mirage_requirements"
TORCH_VERSION="2.13.0"
VERBOSE=0
FORCE=0
for arg in "$@"; do
  case "$arg" in
    -v|--verbose) VERBOSE=1 ;;
    -f|--force) FORCE=1 ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { [ "$VERBOSE" = 1 ] && echo "[bootstrap] $*" >&2; return 0; }
step() { echo "bootstrap: $*" >&2; }  # real work only: a run with nothing to do prints nothing
die() { echo "bootstrap: ERROR: $*" >&2; exit 1; }
warn() { echo "bootstrap: WARNING: $*" >&2; }

# Run a command quietly; on failure show what it printed and stop.
run() {
  if [ "$VERBOSE" = 1 ]; then
    echo "[bootstrap] \$ $*" >&2
    "$@" || die "command failed (exit $?): $*"
    return 0
  fi
  local out rc=0
  out="$(mktemp)"
  "$@" >"$out" 2>&1 || rc=$?
  if [ "$rc" != 0 ]; then
    echo "bootstrap: ERROR: command failed (exit $rc): $*" >&2
    tail -n 80 "$out" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
}

hash_files() {  # content hash of the given files/dirs (missing ones count as absent), order-stable
  (cd "$ROOT" && for p in "$@"; do
      if [ -d "$p" ]; then find "$p" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort; elif [ -e "$p" ]; then echo "$p"; fi
    done | while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -d' ' -f1
}

cd "$ROOT"

# One bootstrap at a time per checkout (parallel test runs would otherwise build into the same dirs).
mkdir -p "$BUILD"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$BUILD/.bootstrap.lock"
  flock 9
fi

# ---------------------------------------------------------------------------------------------- venv
if [ ! -x "$VENV/bin/python" ]; then
  PY="${MIRAGE_PYTHON:-}"
  venv_args=()
  if [ -n "${ROS_DISTRO:-}" ]; then
    # A sourced ROS 2 was built for the system Python; its Python dependencies (yaml, numpy, ...) live in the
    # system site-packages, so the venv must use that interpreter and see them.
    PY="${PY:-python3}"
    venv_args=(--system-site-packages)
  elif [ -z "$PY" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi  # the ROS wheels are cp311
  fi
  command -v "$PY" >/dev/null 2>&1 || die "no Python interpreter '$PY' (set MIRAGE_PYTHON)"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$PY is older than Python 3.10"
  say "creating $VENV with $PY ${venv_args[*]:-}"
  run "$PY" -m venv "${venv_args[@]}" "$VENV"
fi
PYTHON="$VENV/bin/python"
PIP=("$PYTHON" -m pip --disable-pip-version-check)
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

if [ -n "${ROS_DISTRO:-}" ]; then ROS_MODE=system
elif [ "${MIRAGE_SKIP_ROS:-0}" = 1 ]; then ROS_MODE=none
elif [ "$PYVER" = 3.11 ]; then ROS_MODE=wheels
else
  warn "ROS 2 wheels need Python 3.11 (venv has $PYVER) and no ROS 2 is sourced: installing the library only; ROS tests will be skipped"
  ROS_MODE=none
fi
say "python $PYVER, ROS mode: $ROS_MODE"

# --------------------------------------------------------------------------------- python packages
PIP_STAMP="$VENV/.mirage-bootstrap-pip"
pip_key="$(hash_files pyproject.toml mirage/__init__.py "$ROS_REQUIREMENTS" scripts/bootstrap.sh)-$ROS_MODE-$PYVER"  # __init__: the version
if [ "$FORCE" = 1 ] || [ "$(cat "$PIP_STAMP" 2>/dev/null)" != "$pip_key" ]; then
  step "installing Python packages into $VENV (the first time takes a few minutes)"
  # torch first and explicitly: left to the resolver, a plain `torch` requirement pulls the multi-GB CUDA build.
  if "$PYTHON" -c 'import torch' >/dev/null 2>&1; then
    say "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed"
  else
    torch_wheel=""
    IFS=' ' read -r -a link_dirs <<<"${PIP_FIND_LINKS:-} /opt/wheels"
    for d in "${link_dirs[@]}"; do
      d="${d#file://}"
      [ -d "$d" ] || continue
      cand="$(ls "$d"/torch-"$TORCH_VERSION"+cpu-cp"${PYVER/./}"-*.whl 2>/dev/null | head -n 1 || true)"
      if [ -n "$cand" ]; then torch_wheel="$cand"; break; fi
    done
    if [ -n "$torch_wheel" ]; then
      say "installing $torch_wheel"
      run "${PIP[@]}" install "$torch_wheel"
    else
      # The exact local version "+cpu" can only be the CPU build; the PyTorch index may be unreachable.
      say "installing torch==$TORCH_VERSION+cpu"
      if ! "${PIP[@]}" install -q --timeout 20 --retries 1 --extra-index-url https://download.pytorch.org/whl/cpu \
           "torch==$TORCH_VERSION+cpu" >/dev/null 2>&1; then
        warn "no CPU build of torch $TORCH_VERSION found; installing torch==$TORCH_VERSION from the default index"
        run "${PIP[@]}" install "torch==$TORCH_VERSION"
      fi
    fi
  fi
  say "installing mirage (editable) with test extras"
  if [ "$ROS_MODE" = wheels ] && [ "$MIRAGE_ROS_DISTRO" != kilted ]; then
    # one resolution, so the distribution's pins (Jazzy: numpy<2) also choose the library's dependencies
    say "with the ROS 2 $MIRAGE_ROS_DISTRO wheels ($ROS_REQUIREMENTS)"
    run "${PIP[@]}" install -e ".[test]" -r "$ROS_REQUIREMENTS"
  else
    run "${PIP[@]}" install -e ".[test]"
  fi
  if [ "$ROS_MODE" = wheels ] && [ "$MIRAGE_ROS_DISTRO" = kilted ]; then
    say "installing ROS 2 wheels ($ROS_REQUIREMENTS)"
    run "${PIP[@]}" install -r "$ROS_REQUIREMENTS"
  elif [ "$ROS_MODE" = system ] && ! command -v colcon >/dev/null 2>&1; then
    run "${PIP[@]}" install colcon-common-extensions
  fi
  echo "$pip_key" >"$PIP_STAMP"
fi

[ "$ROS_MODE" = none ] && { say "done (library only)"; exit 0; }

# ------------------------------------------------------------------------------------ ROS interfaces
if [ "$ROS_MODE" = wheels ]; then
  # The wheels' exported CMake files name the wheel builder's Python and NumPy include dirs; point them at
  # this interpreter's (idempotent: once rewritten, the pattern no longer matches).
  py_inc="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$PYTHON" -c 'import numpy; print(numpy.get_include())')"
  mapfile -t stale < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" --include='*.cmake' 2>/dev/null || true)
  if [ "${#stale[@]}" -gt 0 ]; then
    say "rewriting build paths in ${#stale[@]} CMake files"
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#${np_inc}#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" \
      "${stale[@]}"
  fi
  export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # LD_LIBRARY_PATH in a fixed order (mirage_ros/wheels_path.py): ros-wheels-bootstrapper orders it through a set.
  site="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  if ! cmp -s mirage_ros/wheels_path.py "$site/_mirage_ros_wheels_path.py"; then
    say "installing the LD_LIBRARY_PATH order into $site"
    cp mirage_ros/wheels_path.py "$site/_mirage_ros_wheels_path.py"
  fi
  [ "$(cat "$site/_mirage_ros_wheels_path.pth" 2>/dev/null)" = "import _mirage_ros_wheels_path" ] ||
    echo "import _mirage_ros_wheels_path" >"$site/_mirage_ros_wheels_path.pth"
fi
command -v cmake >/dev/null 2>&1 || die "cmake not found (apt-get install cmake, or pip install cmake)"
command -v c++ >/dev/null 2>&1 || die "no C++ compiler found (apt-get install g++)"
command -v colcon >/dev/null 2>&1 || die "colcon not found"

# Build the tf2_msgs fallback only where no tf2_msgs is installed (a real one always wins).
have_tf2_msgs=0
IFS=: read -r -a prefixes <<<"${AMENT_PREFIX_PATH:-}"
for p in "${prefixes[@]}"; do
  case "$p" in "$INSTALL"|"$INSTALL/"*) continue ;; esac
  [ -e "$p/share/ament_index/resource_index/packages/tf2_msgs" ] && have_tf2_msgs=1
done
# colcon builds mirage_ros from a copy of its files under build/: with the venv inside the repository, CMake
# refuses to export the venv's NumPy include dir from a package whose source dir contains it. cp -a keeps
# mtimes, so an unchanged interface is not regenerated.
SRC="$BUILD/.src/mirage_ros"
package_paths=("$SRC")
[ "$have_tf2_msgs" = 0 ] && package_paths+=("$ROOT/third_party/tf2_msgs")
for pkg_path in "${package_paths[@]}"; do  # a build dir configured from another source dir cannot be reused
  cache="$BUILD/$(basename "$pkg_path")/CMakeCache.txt"
  if [ -f "$cache" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$pkg_path" "$cache"; then
    rm -rf "$(dirname "$cache")"
  fi
done

ROS_STAMP="$INSTALL/.mirage-bootstrap-ros"
ros_key="$(hash_files package.xml CMakeLists.txt msg srv action mirage_ros scripts/ros launch config third_party/tf2_msgs)-$ROS_MODE-$have_tf2_msgs-$VENV"
if [ "$FORCE" = 1 ] || [ ! -f "$INSTALL/setup.bash" ] || [ "$(cat "$ROS_STAMP" 2>/dev/null)" != "$ros_key" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC/scripts"
  for item in package.xml CMakeLists.txt msg srv action mirage_ros launch config scripts/ros; do
    [ -e "$ROOT/$item" ] && cp -a "$ROOT/$item" "$SRC/$item"
  done
  step "building the ROS package mirage_ros with colcon into $(basename "$INSTALL")/"
  say "building ROS interfaces with colcon (tf2_msgs fallback: $([ "$have_tf2_msgs" = 0 ] && echo yes || echo no))"
  run colcon --log-base "$LOGS" build \
    --paths "${package_paths[@]}" \
    --build-base "$BUILD" --install-base "$INSTALL" \
    --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$PYTHON"
  echo "$ros_key" >"$ROS_STAMP"
fi
say "done; now: source scripts/env.sh"
