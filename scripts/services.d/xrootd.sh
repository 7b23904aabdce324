# xrootd 5 (Debian packages xrootd-server, xrootd-client): one no-auth data server,
# clients limited to this machine, one PID.  The server refuses to run as root, so it
# runs as user xrootd (-R), which owns the data, admin and log directories.  With -n
# the server writes its log to log/<name>/xrootd.log.
XROOTD_PORT=${XROOTD_PORT:-1094}

xrootd_install() { apt_once xrootd-server xrootd-client; }

xrootd_ports() { echo "$XROOTD_PORT"; }

xrootd_start() {
  local d=$SERVICES/xrootd
  mkdir -p "$d/data" "$d/admin" "$d/run" "$d/log"
  chown -R xrootd:xrootd "$d/data" "$d/admin" "$d/run" "$d/log"
  cat > "$d/xrootd.cfg" <<CFG
all.role server
all.export /
oss.localroot $d/data
all.adminpath $d/admin
all.pidpath $d/run
xrootd.chksum adler32
xrd.allow host localhost
CFG
  xrootd -R xrootd -I v4 -p "$XROOTD_PORT" -n opsagent -c "$d/xrootd.cfg" -l "$d/log/xrootd.log" \
    > "$d/log/stdout.log" 2>&1 &
  echo $! > "$RUN/xrootd.pid"
  wait_port 127.0.0.1 "$XROOTD_PORT" 20
}

xrootd_env() {
  echo "XROOTD_TEST_URL=root://127.0.0.1:$XROOTD_PORT"
  echo "XROOTD_DATA=$SERVICES/xrootd/data"
}
