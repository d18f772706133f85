#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1, for tests and laptops. No Docker.
#
#   kafka-local.sh start [--fresh]   fetch Kafka from Maven Central (once), format storage, start, wait
#   kafka-local.sh stop              stop the broker by pid (idempotent)
#   kafka-local.sh status            exit 0 when the broker answers a metadata request
#   kafka-local.sh env               print KAFKA_BOOTSTRAP_SERVERS=... for a running broker
#
# Needs a JDK (17+) and Maven. Jars are cached outside the repo in $UPSELL_KAFKA_HOME
# (default ~/.cache/upsell-triggers/kafka-$KAFKA_VERSION); broker data and logs live in
# $UPSELL_KAFKA_STATE (default $UPSELL_KAFKA_HOME/run). Ports are picked free once and reused,
# so a restarted broker comes back on the same address. UPSELL_KAFKA_EXTRA_PROPS is appended to
# server.properties (later keys win: extra listeners for TLS/SASL tests) and UPSELL_KAFKA_FORMAT_ARGS
# to the storage format command (e.g. --add-scram 'SCRAM-SHA-512=[name=u,password=p]').
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$HERE/pom.xml")
HOME_DIR=${UPSELL_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/upsell-triggers/kafka-$KAFKA_VERSION}
STATE=${UPSELL_KAFKA_STATE:-$HOME_DIR/run}
LIB=$HOME_DIR/lib
PIDFILE=$STATE/kafka.pid
LOG=$STATE/logs/server.out
START_TIMEOUT=${UPSELL_KAFKA_START_TIMEOUT:-90}

log() { echo "kafka-local: $*" >&2; }

fetch() {
  if [ -f "$LIB/.complete" ]; then return; fi
  command -v mvn >/dev/null || { log "mvn not found: install Maven (and a JDK 17+)"; exit 1; }
  log "fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIB"
  mkdir -p "$LIB"
  mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$LIB" -DincludeScope=runtime -Dstyle.color=never >&2
  touch "$LIB/.complete"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

port_free() { python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",int(sys.argv[1])))' "$1" 2>/dev/null; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

bootstrap() { echo "127.0.0.1:$(cat "$STATE/port")"; }

# Sends a Metadata v0 request with the stdlib (no client needed) and checks it lists a broker.
probe() {
  python3 - "$(cat "$STATE/port")" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    cid = b"kafka-local-probe"
    body = struct.pack(">hhih", 3, 0, 7, len(cid)) + cid + struct.pack(">i", 0)
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    data = s.recv(size, socket.MSG_WAITALL)
    corr, nbrokers = struct.unpack(">ii", data[:8])
    sys.exit(0 if corr == 7 and nbrokers >= 1 else 1)
except Exception:
    sys.exit(1)
PY
}

configure() {
  mkdir -p "$STATE/data" "$STATE/logs"
  local port cport
  port=$(cat "$STATE/port" 2>/dev/null || true)
  cport=$(cat "$STATE/cport" 2>/dev/null || true)
  if [ -z "$port" ] || ! port_free "$port"; then port=$(free_port); fi
  if [ -z "$cport" ] || ! port_free "$cport"; then cport=$(free_port); fi
  echo "$port" > "$STATE/port"; echo "$cport" > "$STATE/cport"
  cat > "$STATE/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$STATE/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# A dead worker's open transaction is aborted within 1 s of its timeout, not 10 s (exactly_once's take-over waits for it)
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
group.initial.rebalance.delay.ms=0
log.retention.hours=24
log.segment.bytes=268435456
${UPSELL_KAFKA_EXTRA_PROPS:-}
PROPS
  cat > "$STATE/log4j.properties" <<L4J
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$STATE/logs/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
L4J
  if [ ! -f "$STATE/data/meta.properties" ]; then
    local cluster_id
    cluster_id=$(java -cp "$LIB/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    java -cp "$LIB/*" -Dlog4j.configuration="file:$STATE/log4j.properties" \
      kafka.tools.StorageTool format -t "$cluster_id" -c "$STATE/server.properties" ${UPSELL_KAFKA_FORMAT_ARGS:-} \
      >> "$STATE/logs/format.out" 2>&1
  fi
}

start() {
  if [ "${1:-}" = "--fresh" ]; then stop; rm -rf "$STATE/data"; fi
  if running && probe; then
    log "already running (pid $(cat "$PIDFILE")), logs in $STATE/logs"
    echo "KAFKA_BOOTSTRAP_SERVERS=$(bootstrap)"; return
  fi
  fetch
  command -v java >/dev/null || { log "java not found: install a JDK 17+"; exit 1; }
  running || configure
  if ! running; then
    local t0=$SECONDS
    nohup java -Xms256m -Xmx${UPSELL_KAFKA_HEAP:-768m} -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$STATE/log4j.properties" -Dkafka.logs.dir="$STATE/logs" \
      -cp "$LIB/*" kafka.Kafka "$STATE/server.properties" > "$LOG" 2>&1 < /dev/null &
    echo $! > "$PIDFILE"
    log "started pid $! on $(bootstrap), logs in $STATE/logs (server.log, server.out)"
  fi
  local deadline=$((SECONDS + START_TIMEOUT))
  until probe; do
    if ! running; then log "broker exited during start-up; last log lines:"; tail -n 40 "$STATE/logs/server.log" "$LOG" >&2 || true; exit 1; fi
    if [ $SECONDS -ge $deadline ]; then log "no metadata answer after ${START_TIMEOUT}s; last log lines:"; tail -n 40 "$STATE/logs/server.log" >&2 || true; exit 1; fi
    sleep 0.5
  done
  log "ready: answers metadata requests on $(bootstrap)"
  echo "KAFKA_BOOTSTRAP_SERVERS=$(bootstrap)"
}

stop() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped pid $pid (logs in $STATE/logs)"
  else
    log "not running"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) if running && probe; then echo "running on $(bootstrap)"; else echo "not running"; exit 1; fi ;;
  env) running && probe && echo "KAFKA_BOOTSTRAP_SERVERS=$(bootstrap)" ;;
  *) echo "usage: $0 start [--fresh] | stop | status | env" >&2; exit 2 ;;
esac
