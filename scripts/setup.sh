#!/usr/bin/env bash
# Install what the project needs from Debian's packages, only where something is missing.
#   scripts/setup.sh            build + test dependencies
#   scripts/setup.sh --fuzz     also clang and its libFuzzer runtime
set -euo pipefail

pkgs=(cmake make g++ libeigen3-dev libxsimd-dev doctest-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev
      python3 python3-numpy gnuplot-nox)
for arg in "$@"; do
  [ "$arg" = --fuzz ] && pkgs+=(clang libclang-rt-dev)
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
