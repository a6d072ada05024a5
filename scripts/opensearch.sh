#!/usr/bin/env bash
# A real OpenSearch node (or a small cluster) with the k-NN plugin, assembled from Maven Central
# artefacts by the Maven project in opensearch-node/, bound to loopback only.
#
#   scripts/opensearch.sh start [--nodes N] [--port P] [--heap SIZE]
#       Assembles the node home once (cached in .opensearch/), starts N nodes in the
#       background, waits for the cluster to be green or yellow and prints its URL(s) as the
#       last line (comma-separated for several nodes). A node already running is reused.
#   scripts/opensearch.sh stop                 stops every node; nothing is left running
#   scripts/opensearch.sh kill-node I          kill -9 node I (0-based), for failure tests
#   scripts/opensearch.sh start-node I         starts node I again with its data, once it has joined
#   scripts/opensearch.sh status               one line per node
#
# Environment: OPENSEARCH_STATE (default .opensearch/ in the repository), JAVA_HOME.
# OpenSearch refuses to run as root; started by root, each node runs in a user namespace
# as an unprivileged uid with no capabilities (files it writes stay owned by the caller).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
state="${OPENSEARCH_STATE:-$repo/.opensearch}"
project="$repo/opensearch-node"
version="$(sed -n 's:.*<opensearch.version>\(.*\)</opensearch.version>.*:\1:p' "$project/pom.xml")"
home="$state/home-$version"
cluster_file="$state/cluster.env"   # NODES, PORT, HEAP of the running cluster
java="${JAVA_HOME:+$JAVA_HOME/bin/}java"

die() { echo "opensearch.sh: $*" >&2; exit 1; }

assemble() {
  # Everything the node needs comes from Maven Central through opensearch-node/pom.xml;
  # Maven keeps the downloads in its own cache, so a second assembly is offline.
  [ -f "$home/.assembled" ] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch OpenSearch from Maven Central"
  echo "assembling OpenSearch $version with the k-NN plugin in $home" >&2
  rm -rf "$home.tmp"
  mvn -q -B -Dstyle.color=never -f "$project" package -Dnode.home="$home.tmp" > "$state/mvn.log" 2>&1 \
    || { cat "$state/mvn.log" >&2; die "mvn could not assemble the node (its output is above)"; }
  rm -rf "$home" && mv "$home.tmp" "$home" && touch "$home/.assembled"
}

node_dir() { echo "$state/node-$1"; }
http_port() { echo $((PORT + $1)); }
transport_port() { echo $((PORT + 100 + $1)); }
node_pid() { local f; f="$(node_dir "$1")/pid"; [ -f "$f" ] && cat "$f" || true; }
alive() { local pid; pid="$(node_pid "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {  # node index
  local i=$1 dir conf seeds="" masters="" j
  dir="$(node_dir "$i")"; conf="$dir/config"
  mkdir -p "$conf" "$dir/data" "$dir/logs" "$dir/tmp"
  for ((j = 0; j < NODES; j++)); do
    seeds+="${seeds:+, }\"127.0.0.1:$(transport_port "$j")\""
    masters+="${masters:+, }\"node-$j\""
  done
  {
    echo "# Written by scripts/opensearch.sh: a loopback-only test node."
    echo "cluster.name: ha3-adapter-test"
    echo "node.name: node-$i"
    echo "network.host: 127.0.0.1"
    echo "http.port: $(http_port "$i")"
    echo "transport.port: $(transport_port "$i")"
    echo "path.data: $dir/data"
    echo "path.logs: $dir/logs"
    if [ "$NODES" -eq 1 ]; then
      echo "discovery.type: single-node"
    else
      echo "discovery.seed_hosts: [$seeds]"
      echo "cluster.initial_cluster_manager_nodes: [$masters]"
    fi
    # A test machine's disk may be nearly full; shards must still be allocated.
    echo "cluster.routing.allocation.disk.threshold_enabled: false"
    echo "action.auto_create_index: false"
    # This k-NN plugin (Maven Central) has no native faiss code: a faiss graph build or IVF
    # training would kill the node. The adapter reads this attribute and builds Lucene graphs.
    echo "node.attr.knn_library: lucene"
  } > "$conf/opensearch.yml"
  cat > "$conf/jvm.options" <<EOF
-Xms$HEAP
-Xmx$HEAP
-XX:+UseG1GC
-XX:G1ReservePercent=25
-XX:InitiatingHeapOccupancyPercent=30
-XX:+HeapDumpOnOutOfMemoryError
-XX:HeapDumpPath=$dir/tmp
-XX:ErrorFile=$dir/logs/hs_err_pid%p.log
EOF
  cat > "$conf/log4j2.properties" <<'EOF'
status = error
appender.rolling.type = RollingFile
appender.rolling.name = rolling
appender.rolling.fileName = ${sys:opensearch.logs.base_path}${sys:file.separator}${sys:opensearch.logs.cluster_name}.log
appender.rolling.filePattern = ${sys:opensearch.logs.base_path}${sys:file.separator}${sys:opensearch.logs.cluster_name}-%i.log
appender.rolling.layout.type = PatternLayout
appender.rolling.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
appender.rolling.policies.type = Policies
appender.rolling.policies.size.type = SizeBasedTriggeringPolicy
appender.rolling.policies.size.size = 64MB
appender.rolling.strategy.type = DefaultRolloverStrategy
appender.rolling.strategy.max = 2
rootLogger.level = info
rootLogger.appenderRef.rolling.ref = rolling
EOF
}

launch() {  # node index
  local i=$1 dir opts=()
  dir="$(node_dir "$i")"
  alive "$i" && return 0
  port_busy "$(http_port "$i")" && die "port $(http_port "$i") is taken by another program; pick another with --port"
  write_config "$i"
  mapfile -t opts < <(grep -v '^#' "$dir/config/jvm.options")
  # The options bin/opensearch would add on its own (SystemJvmOptions of the distribution).
  opts+=(-Dfile.encoding=UTF-8 -Djava.io.tmpdir="$dir/tmp" -Djna.nosys=true
         -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true
         -Dio.netty.recycler.maxCapacityPerThread=0 -Dio.netty.allocator.numDirectArenas=0
         -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Dlog4j2.formatMsgNoLookups=true
         -Djava.locale.providers=SPI,COMPAT -XX:+ShowCodeDetailsInExceptionMessages
         -Dopensearch.path.home="$home" -Dopensearch.path.conf="$dir/config"
         -Dopensearch.distribution.type=tar -Dopensearch.bundled_jdk=false)
  local cmd=("$java" "${opts[@]}" -cp "$home/lib/*" org.opensearch.bootstrap.OpenSearch)
  if [ "$(id -u)" = "0" ]; then
    unshare --user --map-user=1000 --map-group=1000 true 2>/dev/null \
      || die "running as root, and no user namespace is available to drop root (OpenSearch refuses root)"
    cmd=(unshare --user --map-user=1000 --map-group=1000 "${cmd[@]}")
  fi
  setsid "${cmd[@]}" >"$dir/logs/stdout.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
}

wait_ready() {  # [status]: every live node in the cluster, and that status or better if given
  local want="${1:+wait_for_status=$1&}" deadline=$((SECONDS + ${OPENSEARCH_START_TIMEOUT:-180})) i live first url
  while :; do
    live=0 first=""
    for ((i = 0; i < NODES; i++)); do
      if alive "$i"; then live=$((live + 1)); first="${first:-$i}"; fi
    done
    [ "$live" -gt 0 ] || die "no node is running; logs in $state/node-*/logs"
    url="http://127.0.0.1:$(http_port "$first")"
    curl -fsS "$url/_cluster/health?${want}wait_for_nodes=>=$live&timeout=5s" >/dev/null 2>&1 && return 0
    for ((i = 0; i < NODES; i++)); do
      [ -f "$(node_dir "$i")/pid" ] && ! alive "$i" && {
        tail -n 30 "$(node_dir "$i")/logs/stdout.log" >&2; die "node $i exited while starting"; }
    done
    [ $SECONDS -lt $deadline ] || die "the cluster was not ready in time; logs in $state/node-*/logs"
    sleep 1
  done
}

urls() {
  local i out=""
  for ((i = 0; i < NODES; i++)); do out+="${out:+,}http://127.0.0.1:$(http_port "$i")"; done
  echo "$out"
}

load_cluster() {
  [ -f "$cluster_file" ] || die "no cluster was started here (run: scripts/opensearch.sh start)"
  # shellcheck disable=SC1090
  source "$cluster_file"
}

stop_node() {  # node index, signal
  local i=$1 sig=${2:-TERM} pid t
  pid="$(node_pid "$i")"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
    for ((t = 0; t < 60; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$(node_dir "$i")/pid"
}

cmd="${1:-}"; shift || true
case "$cmd" in
  start)
    NODES=1; PORT=9200; HEAP=1g
    while [ $# -gt 0 ]; do
      case "$1" in
        --nodes) NODES="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --heap) HEAP="$2"; shift 2 ;;
        *) die "unknown option $1" ;;
      esac
    done
    [[ "$NODES" =~ ^[1-9]$ ]] || die "--nodes takes 1 to 9"
    if [ -f "$cluster_file" ]; then
      old_nodes=$NODES old_port=$PORT
      source "$cluster_file"
      running=0
      for ((i = 0; i < NODES; i++)); do alive "$i" && running=1; done
      if [ $running = 1 ] && { [ "$NODES" != "$old_nodes" ] || [ "$PORT" != "$old_port" ]; }; then
        die "a cluster of $NODES node(s) on port $PORT is running; stop it first"
      fi
      NODES=$old_nodes PORT=$old_port
    fi
    mkdir -p "$state"
    assemble
    printf 'NODES=%s\nPORT=%s\nHEAP=%s\n' "$NODES" "$PORT" "$HEAP" > "$cluster_file"
    for ((i = 0; i < NODES; i++)); do launch "$i"; done
    wait_ready yellow
    urls
    ;;
  start-node)
    # The node has joined; the cluster's colour is the caller's to wait for (others may be down).
    load_cluster; launch "${1:?node index}"; wait_ready; urls ;;
  kill-node)
    load_cluster; stop_node "${1:?node index}" KILL ;;
  stop)
    [ -f "$cluster_file" ] || exit 0
    load_cluster
    for ((i = 0; i < NODES; i++)); do stop_node "$i" TERM; done
    ;;
  status)
    load_cluster
    for ((i = 0; i < NODES; i++)); do
      if alive "$i"; then echo "node-$i up http://127.0.0.1:$(http_port "$i") pid $(node_pid "$i")"
      else echo "node-$i down"; fi
    done
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    [ -z "$cmd" ] && exit 2 || die "unknown command '$cmd'"
    ;;
esac
