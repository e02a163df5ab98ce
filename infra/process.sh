# Shared by the infra scripts (sourced, not run): PID-file process control for one background server.
# The sourcing script sets: name, pidfile, logfile, marker (a word of the server's command line); and
# defines say().

# A PID file can outlive its process, and the PID be reused: ours only if the command line still has the marker.
running() {
  [[ -f $pidfile ]] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 1
  [[ ! -r /proc/$pid/cmdline ]] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "${marker:-}"
}

# While starting: the PID we just wrote may not have exec'd into the server yet, so no marker check.
started_alive() {
  [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_by_pidfile GRACE_SECONDS: TERM the process we started, KILL it if it outlives the grace period.
stop_by_pidfile() {
  local grace=$1
  if ! running; then rm -f "$pidfile"; say "not running"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  say "stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then say "still running after $grace s, killing"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$pidfile"
}

# print_status WHERE: one line, exit code 3 when stopped (like an init script).
print_status() {
  if running; then echo "$name: running (pid $(cat "$pidfile")) on $1"; else echo "$name: stopped"; return 3; fi
}
