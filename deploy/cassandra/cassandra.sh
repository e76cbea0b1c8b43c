#!/usr/bin/env bash
# Run a real single-node Apache Cassandra from the jars Maven fetched (no Docker).
#
#   cassandra.sh fetch                                  download the jars (pom.xml) into lib/
#   cassandra.sh start [--dir D] [--cql-port P] [--storage-port S]   start, wait for CQL
#   cassandra.sh stop  [--dir D]                        stop it by its own pid
#   cassandra.sh status [--dir D]
#
# Defaults: --dir var/cassandra, --cql-port 9042, --storage-port 7000. The data of a
# directory survives a restart. Needs Java 17 and Maven (for fetch).
#
# Client TLS (off by default): start ... --tls-keystore PATH [--tls-keystore-password PW]
# [--tls-store-type PKCS12|JKS] makes the CQL port TLS-only (client_encryption_options
# enabled, optional: false). The password may instead come from
# CASSANDRA_TLS_KEYSTORE_PASSWORD (keeps it out of `ps`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmd="${1:-}"; shift || true
dir="var/cassandra"; cql_port=9042; storage_port=7000
heap="${CASSANDRA_HEAP:-1G}"; timeout_s="${CASSANDRA_START_TIMEOUT:-180}"
tls_keystore=""; tls_password="${CASSANDRA_TLS_KEYSTORE_PASSWORD:-}"; tls_store_type="PKCS12"
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2;;
    --cql-port) cql_port="$2"; shift 2;;
    --storage-port) storage_port="$2"; shift 2;;
    --tls-keystore) tls_keystore="$2"; shift 2;;
    --tls-keystore-password) tls_password="$2"; shift 2;;
    --tls-store-type) tls_store_type="$2"; shift 2;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
lib="$here/lib"

fetch() {
  if [ -f "$lib/.complete" ]; then return 0; fi
  echo "fetching Cassandra jars with Maven into $lib" >&2
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DoutputDirectory="$lib" >&2
  touch "$lib/.complete"
}

cql_answers() {  # the native protocol port accepts a TCP connection
  (exec 3<>"/dev/tcp/127.0.0.1/$cql_port") 2>/dev/null
}

pid_alive() { [ -f "$dir/cassandra.pid" ] && kill -0 "$(cat "$dir/cassandra.pid")" 2>/dev/null; }

log_size() { stat -c %s "$dir/logs/system.log" 2>/dev/null || echo 0; }

# This start finished: system.log, past where it ended before the start, says so. (A
# port that answers is not proof: another listener may hold it and make this one fail.)
startup_complete() {
  local from="$log_offset"
  [ "$(log_size)" -ge "$from" ] || from=0  # the log rolled over meanwhile
  tail -c +"$((from + 1))" "$dir/logs/system.log" 2>/dev/null | grep -q "Startup complete"
}

start() {
  fetch
  if pid_alive; then echo "cassandra already running (pid $(cat "$dir/cassandra.pid"))" >&2; return 0; fi
  mkdir -p "$dir/data" "$dir/commitlog" "$dir/saved_caches" "$dir/hints" "$dir/cdc_raw" "$dir/logs"
  sed -e "s#@DIR@#$dir#g" -e "s#@CQL_PORT@#$cql_port#g" -e "s#@STORAGE_PORT@#$storage_port#g" \
    "$here/cassandra.yaml.template" > "$dir/cassandra.yaml"
  if [ -n "$tls_keystore" ]; then
    [ -r "$tls_keystore" ] || { echo "TLS keystore $tls_keystore not readable" >&2; exit 2; }
    tls_keystore="$(cd "$(dirname "$tls_keystore")" && pwd)/$(basename "$tls_keystore")"
    yaml_quote() { local q="'"; printf "'%s'" "${1//$q/$q$q}"; }
    {
      echo ""
      echo "# Added by cassandra.sh --tls-keystore: the CQL port accepts TLS only."
      echo "client_encryption_options:"
      echo "  enabled: true"
      echo "  optional: false"
      echo "  keystore: $(yaml_quote "$tls_keystore")"
      echo "  keystore_password: $(yaml_quote "$tls_password")"
      echo "  store_type: $(yaml_quote "$tls_store_type")"
      echo "  require_client_auth: false"
    } >> "$dir/cassandra.yaml"
    chmod 600 "$dir/cassandra.yaml"
  fi
  cp "$here/logback.xml" "$dir/logback.xml"
  java_opts=(
    -ea -Xms"$heap" -Xmx"$heap" -Xss512k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:ActiveProcessorCount=2
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    -Dcassandra.config="file://$dir/cassandra.yaml"
    -Dcassandra.storagedir="$dir"
    -Dcassandra.logdir="$dir/logs"
    -Dlogback.configurationFile="file://$dir/logback.xml"
    -Dcassandra-foreground=yes
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=100
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.jmx.local.port=0
  )
  log_offset="$(log_size)"
  java "${java_opts[@]}" -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
    > "$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$dir/cassandra.pid"
  local waited=0
  until startup_complete && cql_answers; do
    if ! pid_alive; then echo "cassandra exited during start-up; see $dir/logs/stdout.log" >&2; tail -30 "$dir/logs/stdout.log" >&2; exit 1; fi
    if [ "$waited" -ge "$timeout_s" ]; then echo "cassandra not answering on $cql_port after ${timeout_s}s" >&2; exit 1; fi
    sleep 1; waited=$((waited + 1))
  done
  echo "cassandra up on 127.0.0.1:$cql_port (pid $(cat "$dir/cassandra.pid"), ${waited}s)" >&2
}

stop() {
  if ! pid_alive; then rm -f "$dir/cassandra.pid"; echo "cassandra not running" >&2; return 0; fi
  local pid; pid="$(cat "$dir/cassandra.pid")"
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  rm -f "$dir/cassandra.pid"
  echo "cassandra stopped (pid $pid)" >&2
}

case "$cmd" in
  fetch) fetch;;
  start) start;;
  stop) stop;;
  status) if pid_alive && cql_answers; then echo "running (pid $(cat "$dir/cassandra.pid"))"; else echo "stopped"; exit 1; fi;;
  *) sed -n '2,12p' "$0"; exit 2;;
esac
