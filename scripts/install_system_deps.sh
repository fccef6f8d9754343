#!/usr/bin/env bash
# Make sure the programs bgmgen runs are on this machine: ffmpeg/ffprobe, fluidsynth, and a Python >= 3.11
# that can create a virtual environment, plus a full General MIDI SoundFont (Debian's fluid-soundfont-gm,
# FluidR3_GM.sf2, 148 MB). As root on Debian/Ubuntu the missing ones are installed with apt-get; otherwise
# the exact command to run is printed and the script fails (for the SoundFont alone it only warns: bgmgen
# then plays with the small TimGM6mb it ships). SF2 and not SF3 (musescore-general-soundfont): FluidSynth
# measured 0.63 s to load FluidR3_GM.sf2 and 23 s to load MuseScore_General_Full.sf3 (docs/benchmarks.md).
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

# The full GM SoundFont, unless a large one is already where bgmgen looks (bgmgen/sound/render.py).
soundfont=(fluid-soundfont-gm)
for font in /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/MuseScore_General*.sf2 \
        /usr/share/soundfonts/FluidR3_GM.sf2; do
    [[ -f $font ]] && soundfont=()
done
if ((${#packages[@]} == 0)) && ((${#soundfont[@]} > 0)) && { ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; }; then
    echo "warning: no full General MIDI SoundFont; bgmgen will use its small TimGM6mb. For a better sound:" >&2
    echo "    sudo apt-get install -y --no-install-recommends fluid-soundfont-gm" >&2
    exit 0
fi
packages+=(${soundfont[@]+"${soundfont[@]}"})

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
