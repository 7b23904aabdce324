#!/usr/bin/env bash
# Install, start, stop the local services the host and the tests use, by PID.
#   scripts/services.sh install|start|stop|restart|status [service ...]
# Each service is one file scripts/services.d/<name>.sh defining <name>_install,
# <name>_start (start in the background, write the PID to $RUN/<name>.pid, wait until
# ready) and optionally <name>_env (print KEY=VALUE lines for clients).  State lives
# under $OPSAGENT_SERVICES (default: <repo>/.services).  Adding a service is adding a file.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export ROOT
export SERVICES=${OPSAGENT_SERVICES:-$ROOT/.services}
export RUN=$SERVICES/run
mkdir -p "$RUN"
ALL=(activemq)
for f in "$ROOT"/scripts/services.d/*.sh; do
  name=$(basename "$f" .sh)
  [[ " ${ALL[*]} " == *" $name "* ]] || ALL+=("$name")
  # shellcheck source=/dev/null
  source "$f"
done

apt_once() {
  # apt-get update once per run, only when a package is missing.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  if [ ! -f "$RUN/.apt-updated" ]; then $sudo apt-get update -qq && touch "$RUN/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
export -f apt_once

wait_port() {  # wait_port HOST PORT SECONDS
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "port $1:$2 not open after $3 s" >&2; return 1; }
    sleep 0.1
  done
}

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

stop_pid() {  # stop_pid NAME: TERM, wait up to 15 s, KILL
  local pidf=$RUN/$1.pid
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidf"
}

cmd=${1:-status}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")
for s in "${targets[@]}"; do
  case $cmd in
    install) "${s}_install" ;;
    start)
      # A running service keeps the env file it was started with (its ports): `make run`
      # beside services started on other ports must not point the clients elsewhere.
      if running "$s"; then echo "$s: already running (pid $(cat "$RUN/$s.pid"))"; continue
      else
        # A port already answering belongs to someone else (say, a service a killed run in
        # another checkout left behind): starting would talk to that one instead.
        if declare -F "${s}_ports" >/dev/null; then
          for port in $("${s}_ports"); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
              echo "$s: port $port is already in use by another process (ss -ltnp | grep :$port)" >&2
              exit 1
            fi
          done
        fi
        "${s}_start"; echo "$s: started (pid $(cat "$RUN/$s.pid"))"
      fi
      if declare -F "${s}_env" >/dev/null; then "${s}_env" > "$SERVICES/$s.env"; fi ;;
    stop) if declare -F "${s}_stop" >/dev/null; then "${s}_stop"; else stop_pid "$s"; fi
          echo "$s: stopped" ;;
    restart) "$0" stop "$s"; "$0" start "$s" ;;
    status) if running "$s"; then echo "$s: running (pid $(cat "$RUN/$s.pid"))"; else echo "$s: stopped"; fi ;;
    *) echo "usage: $0 install|start|stop|restart|status [service ...]" >&2; exit 2 ;;
  esac
done
