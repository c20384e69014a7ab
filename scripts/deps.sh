#!/usr/bin/env bash
# deps.sh [--test] - install, from Debian's packages, whatever pare needs and is missing.
# Runs as root, or through sudo when it is there. --test adds what the test suite needs.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git
      libopenblas-openmp-dev liblapacke-dev libsqlite3-dev sqlite3 libmd-dev libinih-dev gnuplot-nox)
if [[ "${1:-}" == "--test" ]]; then
  pkgs+=(libcmocka-dev python3 python3-torch python3-numpy chromium
         libopenmpi-dev openmpi-bin)  # the data-parallel tests under mpirun (tests/test_mpi.sh)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
