#!/usr/bin/env bash
# The schema registry of the local stack: the LOCAL STAND-IN in infra/registry/local_registry.py, which
# speaks the Confluent Schema Registry REST API (see infra/registry/README.md for why not a real one).
#
#   infra/registry/registry.sh start    start if not running, wait until it answers
#   infra/registry/registry.sh stop     stop the registry this script started (by its PID file)
#   infra/registry/registry.sh status   say whether it runs
#
# Settings (environment): JB_HOME (state, default <repo>/.jetbridge), JB_REGISTRY_PORT (8081),
# JB_PYTHON (interpreter, default <repo>/.venv/bin/python).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${JB_HOME:-$repo/.jetbridge}
port=${JB_REGISTRY_PORT:-8081}
python=${JB_PYTHON:-$repo/.venv/bin/python}
pidfile=$home/run/registry.pid
logfile=$home/logs/registry.log
state=$home/registry/state.json

name=registry
marker=infra.registry.local_registry
# shellcheck source=../process.sh
source "$here/../process.sh"

say() { printf 'registry: %s\n' "$*" >&2; }

answers() {
  "$python" - "$port" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/subjects", timeout=1).read()
PY
}

start() {
  if running; then say "already running (pid $(cat "$pidfile")) on http://127.0.0.1:$port"; return 0; fi
  if port_open "$port"; then
    say "port $port is taken by a process this script did not start; set JB_REGISTRY_PORT"; return 1
  fi
  mkdir -p "$home/run" "$home/logs" "$home/registry"
  say "starting the local stand-in registry on http://127.0.0.1:$port"
  (cd "$repo" && exec setsid "$python" -m infra.registry.local_registry --host 127.0.0.1 --port "$port" \
    --data "$state") >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! started_alive; then say "exited while starting; last lines of $logfile:"; tail -n 20 "$logfile" >&2; return 1; fi
    if (( waited >= 300 )); then say "not ready after 30 s; see $logfile"; return 1; fi
    sleep 0.1; waited=$((waited + 1))
  done
  say "ready on http://127.0.0.1:$port (pid $(cat "$pidfile"))"
}

case ${1:-} in
  fetch) ;;  # nothing to fetch: it runs from the project's own virtualenv
  start) start ;;
  stop) stop_by_pidfile 10 ;;
  status) print_status "http://127.0.0.1:$port" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
