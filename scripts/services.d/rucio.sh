# A real Rucio server (Flask app under gunicorn), sqlite database, userpass auth,
# loopback only.  Rucio lives in its own venv: it pins stomp.py and urllib3 versions
# the project's venv must not get.  The database survives restarts; delete
# $SERVICES/rucio/rucio.db (or set RUCIO_FRESH=true) for an empty server.
RUCIO_PORT=${RUCIO_PORT:-8080}
RUCIO_WORKERS=${RUCIO_WORKERS:-2}
RUCIO_ROOT_IDENTITY=${RUCIO_ROOT_IDENTITY:-ddmlab}
RUCIO_ROOT_PASSWORD=${RUCIO_ROOT_PASSWORD:-secret}
RUCIO_PYTHON=${RUCIO_PYTHON:-python3}

rucio_install() {
  local v=$SERVICES/rucio/venv
  if [ -x "$v/bin/gunicorn" ] && "$v/bin/python" -c 'import rucio.web.rest.flaskapi.v1.main' 2>/dev/null; then
    echo "rucio: already installed in $v"; return 0
  fi
  mkdir -p "$SERVICES/rucio"
  "$RUCIO_PYTHON" -m venv "$v"
  "$v/bin/pip" install -q --disable-pip-version-check rucio gunicorn
}

rucio_ports() { echo "$RUCIO_PORT"; }

rucio_start() {
  local d=$SERVICES/rucio v=$SERVICES/rucio/venv
  [ -x "$v/bin/gunicorn" ] || { echo "rucio: not installed; run scripts/services.sh install rucio" >&2; return 1; }
  mkdir -p "$d/etc" "$d/trace" "$d/log"
  [ "${RUCIO_FRESH:-false}" = true ] && rm -f "$d/rucio.db" "$d/rucio.db-wal" "$d/rucio.db-shm"
  local site; site=$("$v/bin/python" -c 'import os, rucio; print(os.path.dirname(rucio.__file__))')

  # Logging sections come from the shipped template; the database and script_location are ours.
  {
    echo "[alembic]"
    echo "sqlalchemy.url = sqlite:///$d/rucio.db"
    echo "script_location = $site/db/sqla/migrate_repo"
    sed -n '/^\[loggers\]/,$p' "$v/rucio/etc/alembic.ini.template"
  } > "$d/etc/alembic.ini"

  cat > "$d/etc/rucio.cfg" <<CFG
[common]
logdir = $d/log
loglevel = INFO

[client]
rucio_host = http://127.0.0.1:$RUCIO_PORT
auth_host = http://127.0.0.1:$RUCIO_PORT
auth_type = userpass
username = $RUCIO_ROOT_IDENTITY
password = $RUCIO_ROOT_PASSWORD
account = root

[database]
default = sqlite:///$d/rucio.db

[alembic]
cfg = $d/etc/alembic.ini

[bootstrap]
userpass_identity = $RUCIO_ROOT_IDENTITY
userpass_pwd = $RUCIO_ROOT_PASSWORD
userpass_email = root@localhost

[policy]
package = opsagent_rucio_policy
permission = generic
schema = generic
lfn2pfn_algorithm_default = hash

# Set here so that no request falls back to the config table in the database: on
# sqlite that second connection can deadlock with the request's own write.
[conveyor]
use_preparer = false

[trace]
tracedir = $d/trace
brokers = 127.0.0.1
port = 61013
topic = /topic/rucio.tracer
username = none
password = none
CFG

  # The experiment's DID names carry '=' and '+' (minQ2=10, pi+), which the generic
  # schema refuses: a policy package that widens only the name pattern, put on the
  # venv's path so the server, bootstrap and any daemon run from the venv load it.
  mkdir -p "$d/policy/opsagent_rucio_policy"
  echo '"""Test-server policy: generic, with DID names as the experiment writes them."""' \
    > "$d/policy/opsagent_rucio_policy/__init__.py"
  cat > "$d/policy/opsagent_rucio_policy/schema.py" <<'PY'
from rucio.common.schema.generic import *  # noqa: F403
from rucio.common.schema.generic import NAME

# Every schema built from NAME holds this same dict, so widening it here widens them all.
NAME["pattern"] = r"^[/A-Za-z0-9][/A-Za-z0-9\.\-_=+]*$"
PY
  echo "$d/policy" > "$("$v/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/opsagent_rucio_policy.pth"

  if [ ! -s "$d/rucio.db" ]; then
    RUCIO_HOME=$d "$v/bin/python" "$v/rucio/tools/bootstrap.py" > "$d/bootstrap.log" 2>&1 \
      || { echo "rucio: bootstrap failed, see $d/bootstrap.log" >&2; rm -f "$d/rucio.db"; return 1; }
  fi
  # WAL: readers (the other worker, a daemon) never wait behind a large write.
  "$v/bin/python" -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("PRAGMA journal_mode=WAL")' \
    "$d/rucio.db"

  # gunicorn >= 27 opens a control socket under $HOME unless told not to.
  local ctl=()
  # (grep -c reads to the end: an early exit would SIGPIPE gunicorn and fail under pipefail)
  "$v/bin/gunicorn" --help 2>/dev/null | grep -c -- --no-control-socket >/dev/null \
    && ctl=(--no-control-socket)
  # setsid runs gunicorn in place, in its own process group: the PID we record is the
  # master's, which stops its workers on TERM, and the group catches any left behind.
  RUCIO_HOME=$d setsid "$v/bin/gunicorn" -b "127.0.0.1:$RUCIO_PORT" -w "$RUCIO_WORKERS" \
    --pid "$d/gunicorn.pid" --timeout 120 --graceful-timeout 5 \
    "${ctl[@]}" \
    rucio.web.rest.flaskapi.v1.main:application > "$d/gunicorn.log" 2>&1 &
  echo $! > "$RUN/rucio.pid"

  local deadline=$((SECONDS + 60))
  # The venv's own python, not curl: a fresh machine may not have curl.
  until "$v/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$RUCIO_PORT/ping" >/dev/null 2>&1; do
    if ! running rucio || [ $SECONDS -ge $deadline ]; then
      echo "rucio: /ping not answering, see $d/gunicorn.log" >&2; rucio_stop; return 1
    fi
    sleep 0.2
  done
}

rucio_stop() {
  # gunicorn's master stops its workers on TERM; the process group catches any
  # worker left behind by a master that died first.
  local pidf=$RUN/rucio.pid
  [ -f "$pidf" ] || return 0
  local pid; pid=$(cat "$pidf")
  stop_pid rucio
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$SERVICES/rucio/gunicorn.pid"
}

rucio_env() {
  echo "RUCIO_TEST_URL=http://127.0.0.1:$RUCIO_PORT"
  echo "RUCIO_TEST_ACCOUNT=root"
  echo "RUCIO_TEST_USERNAME=$RUCIO_ROOT_IDENTITY"
  echo "RUCIO_TEST_PASSWORD=$RUCIO_ROOT_PASSWORD"
}
