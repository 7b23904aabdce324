#!/usr/bin/env bash
# scripts/venv.sh VENV PYTHON PLUGIN_DIR... : a venv with the host and the bundled plugins.
set -euo pipefail
venv=$1; python=$2; shift 2
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv python3-pip >/dev/null
fi
# systemd-analyze: the tests verify the unit and score its hardening with it.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq systemd >/dev/null
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# dev too: the tests bake the capability template and build the documentation; bench: the
# plots `make bench` draws; mcp: `opsagent mcp` and its tests.
args=(-e ".[test,dev,bench,mcp]")
for p in "$@"; do args+=(-e "$p"); done
"$venv/bin/python" -m pip install -q "${args[@]}"
