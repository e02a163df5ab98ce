#!/usr/bin/env bash
# Redis for the local stack: Debian's redis-server as a process of its own, with its own settings (on its
# command line, not /etc/redis/redis.conf), bound to loopback. A cache: nothing is written to disk.
#
#   infra/redis/redis.sh install  install Debian's redis-server if it is missing (apt-get, as root; once)
#   infra/redis/redis.sh start    install if needed, start, wait until it answers PING
#   infra/redis/redis.sh stop     stop the Redis this script started (by its PID file)
#   infra/redis/redis.sh status   say whether it runs
#
# Settings (environment): JB_HOME (state, default <repo>/.jetbridge), JB_REDIS_PORT (6379).
#
# It says a line per step on stderr; apt's output goes to $JB_HOME/logs/setup.log, the server's to
# $JB_HOME/logs/redis.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
home=${JB_HOME:-$repo/.jetbridge}
port=${JB_REDIS_PORT:-6379}
state=$home/redis
pidfile=$home/run/redis.pid
logfile=$home/logs/redis.log
setuplog=$home/logs/setup.log

name=redis
marker=redis-server
# shellcheck source=../process.sh
source "$here/../process.sh"

say() { printf 'redis: %s\n' "$*" >&2; }

install() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return 0; fi
  if [[ $(id -u) != 0 ]]; then
    say "redis-server not found: install Debian's package (sudo apt-get install redis-server)"; return 1
  fi
  say "installing Debian's redis-server with apt-get (once; log: $setuplog)"
  mkdir -p "$home/logs"
  export DEBIAN_FRONTEND=noninteractive
  # noninteractive and the old conffiles: apt never asks. The package may start the system's own service on
  # 6379 where an init system runs; this script does not use it (see start).
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold redis-server; } \
      </dev/null >>"$setuplog" 2>&1; then
    say "apt-get could not install redis-server; last lines of $setuplog:"; tail -n 20 "$setuplog" >&2; return 1
  fi
}

answers() {
  [[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]
}

start() {
  if running; then say "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  install
  if port_open "$port"; then
    say "port $port is taken by a process this script did not start (the system's redis-server service?);" \
      "stop it, or set JB_REDIS_PORT for another port (or REDIS_URL to use that one as it is)"
    return 1
  fi
  mkdir -p "$home/run" "$home/logs" "$state"
  say "starting Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port"
  # setsid: its own process group, so `stop` ends this server and nothing else. --save "" and no AOF: a cache
  # that starts empty; --dir only holds what Redis writes on its own (nothing, with these settings).
  setsid redis-server --bind 127.0.0.1 --port "$port" --protected-mode yes --daemonize no --supervised no \
    --save "" --appendonly no --dir "$state" --logfile "" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! started_alive; then say "exited while starting; last lines of $logfile:"; tail -n 20 "$logfile" >&2; return 1; fi
    if (( waited >= 100 )); then say "not answering PING after 10 s; see $logfile"; return 1; fi
    sleep 0.1; waited=$((waited + 1))
  done
  say "ready on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

case ${1:-} in
  install) install ;;
  start) start ;;
  stop) stop_by_pidfile 10 ;;
  status) print_status "127.0.0.1:$port" ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
