#!/usr/bin/env bash
# Apache Kafka (KRaft, one node: broker + controller) for the local stack, from the official jars.
#
#   infra/kafka/kafka.sh fetch    copy the broker jars from Maven Central into the cache (once)
#   infra/kafka/kafka.sh start    fetch if needed, format storage if new, start, wait until ready
#   infra/kafka/kafka.sh stop     stop the broker this script started (by its PID file)
#   infra/kafka/kafka.sh status   say whether it runs
#
# Settings (environment): JB_HOME (state, default <repo>/.jetbridge), JB_CACHE (jar cache, default
# ~/.cache/jetbridge), JB_KAFKA_PORT (9092), JB_KAFKA_CONTROLLER_PORT (9093), JB_KAFKA_HEAP (512m).
#
# SCRAM (a broker that wants clients to authenticate, as a secured cluster does): with JB_KAFKA_SCRAM_USER and
# JB_KAFKA_SCRAM_PASSWORD set, JB_KAFKA_PORT is a SASL_PLAINTEXT listener taking SCRAM-SHA-512, that user is
# created when the storage is formatted, and the node talks to itself in PLAINTEXT on JB_KAFKA_INTERNAL_PORT
# (JB_KAFKA_PORT + 2) on loopback (server-scram.properties.in). A storage formatted in one mode is not started in
# the other: give it a JB_HOME of its own. Clients then set KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT and
# KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD (README "Kafka security").
#
# It says a line per step on stderr; Maven's output goes to $JB_HOME/logs/setup.log, the broker's and the
# storage tool's (a dump of every configuration value) to $JB_HOME/logs/kafka.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
home=${JB_HOME:-$repo/.jetbridge}
cache=${JB_CACHE:-$HOME/.cache/jetbridge}
libs=$cache/kafka/$version/libs
port=${JB_KAFKA_PORT:-9092}
cport=${JB_KAFKA_CONTROLLER_PORT:-9093}
iport=${JB_KAFKA_INTERNAL_PORT:-$((port + 2))}
scram_user=${JB_KAFKA_SCRAM_USER:-}
scram_password=${JB_KAFKA_SCRAM_PASSWORD:-}
state=$home/kafka
data=$state/data
pidfile=$home/run/kafka.pid
logfile=$home/logs/kafka.log
setuplog=$home/logs/setup.log

name=kafka
marker=kafka.Kafka
# shellcheck source=../process.sh
source "$here/../process.sh"

say() { printf 'kafka: %s\n' "$*" >&2; }

fetch() {
  if [[ -f $libs/.complete ]]; then return 0; fi
  say "fetching the Apache Kafka $version jars from Maven Central into $libs (once; log: $setuplog)"
  mkdir -p "$libs" "$home/logs"
  # -B and style.color=never: no progress bars or colours; Maven 3.8 still writes colour resets, so strip
  # escapes too (pipefail keeps Maven's exit code).
  if ! mvn -B -q -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" 2>&1 | sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' >>"$setuplog"; then
    say "Maven could not fetch the jars; last lines of $setuplog:"; tail -n 20 "$setuplog" >&2; return 1
  fi
  touch "$libs/.complete"
}

java_run() {
  # shellcheck disable=SC2086
  java -Xms128m -Xmx"${JB_KAFKA_HEAP:-512m}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -cp "$libs/*" "$@"
}

# The client listener's mode, written beside the storage when it is formatted (never the password).
listener_mode() {
  if [[ -n $scram_user ]]; then echo "SASL_PLAINTEXT SCRAM-SHA-512 user=$scram_user"; else echo "PLAINTEXT"; fi
}

format_storage() {
  mkdir -p "$state" "$data"
  local fill=(-e "s:@DATA_DIR@:$data:" -e "s:@PORT@:$port:" -e "s:@CONTROLLER_PORT@:$cport:" -e "s:@INTERNAL_PORT@:$iport:")
  if [[ -z $scram_user ]]; then
    sed "${fill[@]}" "$here/server.properties.in" >"$state/server.properties"
  else
    if [[ -z $scram_password ]]; then say "JB_KAFKA_SCRAM_USER is set: set JB_KAFKA_SCRAM_PASSWORD too"; return 1; fi
    # The plain template without its listener lines, then the SCRAM ones.
    { sed "${fill[@]}" -e '/^listeners=/d' -e '/^advertised.listeners=/d' -e '/^listener.security.protocol.map=/d' \
        -e '/^inter.broker.listener.name=/d' "$here/server.properties.in"
      sed "${fill[@]}" "$here/server-scram.properties.in"; } >"$state/server.properties"
  fi
  if [[ -f $data/meta.properties ]]; then
    local formatted; formatted=$(cat "$state/listener-mode" 2>/dev/null || echo PLAINTEXT)
    if [[ $formatted != "$(listener_mode)" ]]; then
      say "the storage in $data was formatted for $formatted, not $(listener_mode): use another JB_HOME"; return 1
    fi
    return 0
  fi
  local cluster_id
  cluster_id=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  say "formatting storage in $data (cluster $cluster_id, clients: $(listener_mode))"
  mkdir -p "$home/logs"
  local scram=()
  # On the storage tool's command line for a moment: a local broker's test credential, not a real secret.
  if [[ -n $scram_user ]]; then scram=(--add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_password]"); fi
  if ! java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" "${scram[@]}" \
    >>"$logfile" 2>&1; then
    say "formatting failed; last lines of $logfile:"; tail -n 20 "$logfile" >&2; return 1
  fi
  listener_mode >"$state/listener-mode"
}

start() {
  if running; then say "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  if port_open "$port"; then
    say "port $port is taken by a process this script did not start; set JB_KAFKA_PORT"; return 1
  fi
  command -v java >/dev/null || { say "java not found: install a JDK 17+"; return 1; }
  fetch
  format_storage
  mkdir -p "$home/run" "$home/logs"
  local offset; offset=$(stat -c %s "$logfile" 2>/dev/null || echo 0)
  say "starting Apache Kafka $version on 127.0.0.1:$port (clients: $(listener_mode))"
  # setsid: its own process group, so `stop` ends the JVM and nothing else.
  setsid bash -c "exec java -Xms128m -Xmx${JB_KAFKA_HEAP:-512m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile='$here/log4j2.properties' \
    -cp '$libs/*' kafka.Kafka '$state/server.properties'" >>"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  # Process substitution, not a pipe: under pipefail, `tail | grep -q` fails whenever grep stops reading early
  # (tail gets SIGPIPE), which is exactly when a broker with many partitions has logged a lot at start-up.
  until grep -q "Kafka Server started" <(tail -c +"$((offset + 1))" "$logfile" 2>/dev/null) && port_open "$port"; do
    if ! started_alive; then say "broker exited while starting; last lines of $logfile:"; tail -n 20 "$logfile" >&2; return 1; fi
    if (( waited >= 240 )); then say "not ready after 120 s; see $logfile"; return 1; fi
    sleep 0.5; waited=$((waited + 1))
  done
  say "ready on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

case ${1:-} in
  fetch) fetch ;;
  start) start ;;
  stop) stop_by_pidfile 30 ;;
  status) print_status "127.0.0.1:$port" ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
