#!/usr/bin/env bash
# Make sure the programs bgmgen runs are on this machine: ffmpeg/ffprobe, fluidsynth, and a Python >= 3.11
# that can create a virtual environment. As root on Debian/Ubuntu the missing ones are installed with
# apt-get; otherwise the exact command to run is printed and the script fails.
#
# Usage: scripts/install_system_deps.sh [PYTHON]   (PYTHON defaults to python3.11, then python3)
set -euo pipefail

python=${1:-$(command -v python3.11 || command -v python3 || true)}
packages=()

# Debian's ffmpeg package provides both ffmpeg and ffprobe.
for tool in ffmpeg ffprobe fluidsynth; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        pkg=$tool
        [[ $tool == ffprobe ]] && pkg=ffmpeg
        [[ " ${packages[*]-} " == *" $pkg "* ]] || packages+=("$pkg")
    fi
done

if [[ -z $python ]] || ! command -v "$python" >/dev/null 2>&1; then
    echo "error: no python3 found; install Python >= 3.11 (Debian 12: apt-get install python3 python3-venv)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: bgmgen needs Python >= 3.11, but $python is $("$python" --version 2>&1);" \
        "run make with PYTHON=/path/to/python3.11" >&2
    exit 1
fi
# Debian splits venv/ensurepip out of the interpreter package (python3.11-venv).
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=("$("$python" -c 'import sys; print("python%d.%d-venv" % sys.version_info[:2])')")
fi

if ((${#packages[@]} == 0)); then
    exit 0
fi

install_args=(install -y --no-install-recommends "${packages[@]}")
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${packages[*]}; install them with your system's package manager and rerun" >&2
    exit 1
fi
if ((EUID != 0)); then
    echo "error: missing ${packages[*]}. Install them, then rerun make:" >&2
    echo "    sudo apt-get update && sudo apt-get ${install_args[*]}" >&2
    exit 1
fi

echo "Installing ${packages[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get -q "${install_args[@]}"
