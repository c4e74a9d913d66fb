#!/usr/bin/env bash
# deploy/local/stack.sh — installs and runs seer's local stack on loopback.
#
#   stack.sh install   fetch ONNX Runtime, the Kafka jars, the Python venv and
#                      (apt, only when missing) redis-server, clickhouse-server,
#                      prometheus (promtool), prometheus-alertmanager, and
#                      buildah, podman, runc and catatonit (the image);
#                      `install onnxruntime-gpu` fetches the CUDA build of ONNX
#                      Runtime (PyPI onnxruntime-gpu) for a GPU machine
#   stack.sh up [SVC]  install, then start (all, or only the named services:
#                      kafka redis redis-cluster clickhouse; alertmanager and
#                      clickhouse-cluster only when named)
#                      Kafka, Redis and ClickHouse and wait
#                      until each answers; a service already answering on its
#                      port is left alone and not restarted
#   stack.sh down      stop the services this script started (never others);
#                      `down clickhouse-cluster` stops only that cluster
#   stack.sh status    say which services answer
#   stack.sh env       print the environment seer and its tests read;
#                      `env --secure` points seer at the SASL_SSL listener
#                      with serve's credentials
#
# Everything lives under one git-ignored cache folder, $SEER_CACHE_DIR
# (default: <repo>/.cache), except ClickHouse's tables where that folder is
# on an ext4 without a journal: they go to /dev/shm (place_clickhouse_data;
# SEER_CLICKHOUSE_DATA=DIR picks the folder). Every step is idempotent and
# fast on re-run.
# Ports: SEER_KAFKA_PORT (9092), SEER_KAFKA_CONTROLLER_PORT (9093),
# SEER_KAFKA_SASL_PORT (9094, SASL_SSL), SEER_KAFKA_MTLS_PORT (9095, mTLS),
# SEER_REDIS_PORT (6379), SEER_REDIS_TLS_PORT (6380), SEER_REDIS_CLUSTER_PORT (7001,
# and the next two), SEER_CLICKHOUSE_PORT (9000), SEER_CLICKHOUSE_CLUSTER_PORT (9101, and
# the next), SEER_ZOOKEEPER_PORT (2181),
# SEER_CLICKHOUSE_HTTP_PORT (8123), SEER_CLICKHOUSE_TLS_PORT (9440), SEER_ALERTMANAGER_PORT
# (9193). All servers bind to 127.0.0.1 only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SEER_CACHE_DIR:-$repo/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
secure=$cache/secure # certificates and passwords of the local stack (make_secrets)

kafka_port=${SEER_KAFKA_PORT:-9092}
kafka_ctl_port=${SEER_KAFKA_CONTROLLER_PORT:-9093}
kafka_sasl_port=${SEER_KAFKA_SASL_PORT:-9094}
kafka_mtls_port=${SEER_KAFKA_MTLS_PORT:-9095}
# The secure listeners' principals: admin (a super user), and one per seer
# client, each with a SCRAM password and a client certificate.
kafka_principals=(admin serve monitor registry loadtest)
# Redis users (ACLs; the default user stays open on the plaintext port for
# development) and ClickHouse users (users.xml).
redis_users=(seer-reader seer-loader seer-monitor)
clickhouse_users=(seer_writer seer_monitor seer_analyst)
redis_port=${SEER_REDIS_PORT:-6379}
redis_tls_port=${SEER_REDIS_TLS_PORT:-6380}
redis_cluster_port=${SEER_REDIS_CLUSTER_PORT:-7001} # and the next two
ch_cluster_port=${SEER_CLICKHOUSE_CLUSTER_PORT:-9101} # and the next: two replicas of one shard
zk_port=${SEER_ZOOKEEPER_PORT:-2181}
ch_port=${SEER_CLICKHOUSE_PORT:-9000}
ch_http_port=${SEER_CLICKHOUSE_HTTP_PORT:-8123}
ch_tls_port=${SEER_CLICKHOUSE_TLS_PORT:-9440}
am_port=${SEER_ALERTMANAGER_PORT:-9193} # Kafka's controller has 9093

ort_version=1.30.0
ort_sha256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
# The CUDA 13 build of the same ONNX Runtime: PyPI onnxruntime-gpu's wheel
# (its C library and providers do not depend on the Python version).
ort_gpu_wheel=onnxruntime_gpu-$ort_version-cp311-cp311-manylinux_2_28_x86_64.whl
ort_gpu_sha256=4fbf0c5d7b5fb99266c2e8a802e3e64af68bdc383e0f3c7349b985f1087eedaa

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

# port_open PORT — true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port NAME PORT SECONDS LOGFILE
wait_port() {
  local name=$1 port=$2 secs=$3 logf=$4 i
  for ((i = 0; i < secs * 4; i++)); do
    port_open "$port" && { log "$name answers on 127.0.0.1:$port"; return 0; }
    sleep 0.25
  done
  log "$name did not answer on 127.0.0.1:$port within ${secs}s; last log lines ($logf):"
  tail -n 30 "$logf" >&2 || true
  return 1
}

# ---------------------------------------------------------------- install ---

install_apt() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v clickhouse-server >/dev/null || missing+=(clickhouse-server)
  command -v clickhouse-client >/dev/null || missing+=(clickhouse-client)
  # promtool (rule checks and unit tests) and Alertmanager (seer monitor's
  # alerts, for real); neither runs as a service here.
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  # The container image: built with buildah, run with podman (runc; catatonit
  # is the pause process of podman kube play's pods).
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v catatonit >/dev/null || missing+=(catatonit)
  # ZooKeeper coordinates the local ClickHouse cluster (up clickhouse-cluster).
  [ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them; install them or point SEER_* at existing services"
  local sudo=
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  log "installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq
  # The Debian packages try to start their services; there is no init here and
  # we run them ourselves, so forbid that.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_onnxruntime() {
  local dir=$cache/onnxruntime lib=$cache/onnxruntime/libonnxruntime.so.1
  if [ -f "$lib" ] && echo "$ort_sha256  $lib" | sha256sum -c --status; then
    return 0
  fi
  command -v npm >/dev/null || die "npm is needed to fetch onnxruntime-node@$ort_version"
  log "fetching libonnxruntime.so.1 $ort_version (npm onnxruntime-node, ~110 MB)"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "onnxruntime-node@$ort_version" >/dev/null)
  tar -xzf "$tmp/onnxruntime-node-$ort_version.tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1
  echo "$ort_sha256  $tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --status ||
    die "libonnxruntime.so.1 from onnxruntime-node@$ort_version does not match sha256 $ort_sha256"
  mkdir -p "$dir"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$lib"
  rm -rf "$tmp"
}

# install_onnxruntime_gpu puts libonnxruntime.so.1 (CUDA build) and its
# providers (shared, cuda) into $cache/onnxruntime-gpu with a SHA256SUMS.
# They need CUDA 13, cuBLAS and cuDNN 9 at run time, on the GPU machine.
install_onnxruntime_gpu() {
  local dir=$cache/onnxruntime-gpu
  [ -f "$dir/SHA256SUMS" ] && (cd "$dir" && sha256sum -c --status SHA256SUMS) && return 0
  local tmp
  tmp=$(mktemp -d)
  log "fetching $ort_gpu_wheel (PyPI onnxruntime-gpu, ~250 MB)"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$tmp" "onnxruntime-gpu==$ort_version" ||
    die "pip could not download onnxruntime-gpu==$ort_version"
  echo "$ort_gpu_sha256  $tmp/$ort_gpu_wheel" | sha256sum -c --status ||
    die "$ort_gpu_wheel does not match sha256 $ort_gpu_sha256"
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$tmp" && python3 -m zipfile -e "$ort_gpu_wheel" x >/dev/null)
  mv "$tmp/x/onnxruntime/capi/libonnxruntime.so.$ort_version" "$dir/libonnxruntime.so.1"
  mv "$tmp/x/onnxruntime/capi/libonnxruntime_providers_shared.so" "$tmp/x/onnxruntime/capi/libonnxruntime_providers_cuda.so" "$dir/"
  chmod 0755 "$dir"/*.so*
  (cd "$dir" && sha256sum libonnxruntime.so.1 libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so >SHA256SUMS)
  rm -rf "$tmp"
  log "CUDA build of ONNX Runtime $ort_version in $dir ($(du -sh "$dir" | cut -f1))"
}

install_kafka() {
  local lib=$cache/kafka/lib stamp=$cache/kafka/lib/.pom.sha256 want
  want=$(sha256sum "$here/kafka/pom.xml" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  command -v mvn >/dev/null || die "mvn is needed to resolve the Kafka broker jars"
  command -v java >/dev/null || die "java 17+ is needed to run the Kafka broker"
  log "resolving the Kafka broker jars with mvn (first run only)"
  rm -rf "$lib"
  mkdir -p "$lib"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" >"$cache/kafka/mvn.log" 2>&1 ||
    { tail -n 40 "$cache/kafka/mvn.log" >&2; die "mvn could not resolve the Kafka jars (log: $cache/kafka/mvn.log)"; }
  echo "$want" >"$stamp"
}

# install_venv [NAME REQUIREMENTS] — a pinned venv under the cache.
install_venv() {
  local venv=$cache/${1:-venv} req=$here/${2:-requirements.txt} want
  local stamp=$venv/.requirements.sha256
  want=$(sha256sum "$req" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  log "creating the Python venv $(basename "$venv") from $(basename "$req") (first run only)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
}

cmd_install() {
  install_apt
  install_onnxruntime
  local s
  for s in "$@"; do
    case $s in
      kafka) install_kafka ;;
      python) install_venv && install_venv venv-evidently requirements-evidently.txt ;;
      onnxruntime-gpu) install_onnxruntime_gpu ;;
    esac
  done
}

# ------------------------------------------------------------------ start ---

# start_alertmanager — Debian's Alertmanager with deploy/alertmanager's
# config, on 127.0.0.1 (only on request: stack.sh up alertmanager).
start_alertmanager() {
  if port_open "$am_port"; then log "alertmanager: something already answers on $am_port; leaving it alone"; return 0; fi
  mkdir -p "$cache/alertmanager" "$cache/run"
  prometheus-alertmanager --config.file="$repo/deploy/alertmanager/alertmanager.yml" --storage.path="$cache/alertmanager" \
    --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$cache/alertmanager/alertmanager.log" 2>&1 &
  echo $! >"$cache/run/alertmanager.pid"
  wait_port alertmanager "$am_port" 20 "$cache/alertmanager/alertmanager.log"
  log "alertmanager: http://127.0.0.1:$am_port (point monitor.webhook_url at http://127.0.0.1:$am_port/api/v2/alerts)"
}

start_redis() {
  if port_open "$redis_port"; then log "redis: something already answers on $redis_port; leaving it alone"; return 0; fi
  mkdir -p "$cache/redis" "$cache/run"
  make_secrets
  # The plaintext port keeps the open default user for development; the TLS
  # port asks for a client certificate from the test CA.
  redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes \
    --tls-port "$redis_tls_port" --tls-cert-file "$secure/server.crt" --tls-key-file "$secure/server.key" \
    --tls-ca-cert-file "$secure/ca.crt" --tls-auth-clients yes \
    --dir "$cache/redis" --logfile "$cache/redis/redis.log" \
    --save '' --appendonly no --daemonize yes --pidfile "$cache/run/redis.pid"
  wait_port redis "$redis_port" 20 "$cache/redis/redis.log"
  # The feature store's reader and loader users (seer acls), for the
  # default key prefix.
  if [ -x "$repo/bin/seer" ]; then
    SEER_REDIS_ADDR=127.0.0.1:$redis_port "$repo/bin/seer" acls --apply --kafka=false \
      --redis-reader-password-file "$secure/seer-reader.password" --redis-loader-password-file "$secure/seer-loader.password" \
      --redis-monitor-password-file "$secure/seer-monitor.password" \
      >"$cache/redis/acls.log" 2>&1 || { cat "$cache/redis/acls.log" >&2; die "creating the Redis users failed"; }
    log "redis: users seer-reader, seer-loader and seer-monitor created; TLS on 127.0.0.1:$redis_tls_port (client certificates required)"
  fi
}

# start_redis_cluster — a three-primary Redis Cluster on 127.0.0.1 ports
# $redis_cluster_port, +1, +2 (no replicas: the tests need the slots spread
# over nodes, not failover), created with redis-cli --cluster create. Its
# state is thrown away on stop.
start_redis_cluster() {
  local d=$cache/redis-cluster p ports=() i
  for i in 0 1 2; do ports+=($((redis_cluster_port + i))); done
  if port_open "${ports[0]}"; then log "redis-cluster: something already answers on ${ports[0]}; leaving it alone"; return 0; fi
  rm -rf "$d" && mkdir -p "$d" "$cache/run"
  for p in "${ports[@]}"; do
    mkdir -p "$d/$p"
    redis-server --bind 127.0.0.1 --port "$p" --protected-mode yes --cluster-enabled yes \
      --cluster-config-file "$d/$p/nodes.conf" --cluster-node-timeout 5000 \
      --dir "$d/$p" --logfile "$d/$p/redis.log" --save '' --appendonly no \
      --daemonize yes --pidfile "$cache/run/redis-cluster-$p.pid"
    wait_port "redis-cluster node" "$p" 20 "$d/$p/redis.log"
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 --cluster-yes \
    >"$d/create.log" 2>&1 || { cat "$d/create.log" >&2; die "redis-cli --cluster create failed"; }
  for ((i = 0; i < 80; i++)); do
    redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
    sleep 0.25
  done
  redis-cli -p "${ports[0]}" cluster info | grep -q '^cluster_state:ok' || die "the Redis Cluster did not reach cluster_state:ok"
  log "redis-cluster: three primaries on 127.0.0.1:${ports[0]}-${ports[2]} (SEER_REDIS_CLUSTER_ADDRS)"
}

# start_clickhouse_cluster — the cluster "seer" of ClickHouse: one shard,
# two replicas on 127.0.0.1 ports $ch_cluster_port and +1, coordinated by
# a ZooKeeper (Debian's package) on $zk_port. Each server is the stack's
# single-server config plus config.d/cluster.xml. Started only on request;
# stop it with `stack.sh down clickhouse-cluster`.
start_clickhouse_cluster() {
  local d=$cache/clickhouse-cluster n dn port
  if port_open "$ch_cluster_port"; then log "clickhouse-cluster: something already answers on $ch_cluster_port; leaving it alone"; return 0; fi
  make_secrets
  rm -rf "$d" && mkdir -p "$d/zookeeper/data" "$cache/run"
  printf 'tickTime=500\ndataDir=%s\nclientPort=%s\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n' \
    "$d/zookeeper/data" "$zk_port" >"$d/zookeeper/zoo.cfg"
  nohup java -Xmx256m -cp /usr/share/java/zookeeper.jar org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/zookeeper/zoo.cfg" \
    >"$d/zookeeper/zookeeper.log" 2>&1 &
  echo $! >"$cache/run/zookeeper.pid"
  wait_port zookeeper "$zk_port" 60 "$d/zookeeper/zookeeper.log"
  # ClickHouse 18.16 crashes on its first distributed DDL when ZooKeeper
  # did not answer at its start: wait until ZooKeeper serves.
  for ((n = 0; n < 120; n++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null | grep -q '^Mode: standalone' && break
    sleep 0.25
  done
  sleep 1
  for n in 1 2; do
    dn=$d/node$n port=$((ch_cluster_port + n - 1))
    mkdir -p "$dn/data" "$dn/tmp" "$dn/user_files" "$dn/log" "$dn/format_schemas" "$dn/config.d"
    sed -e "s|@DIR@|$dn|g" -e "s|@TCP_PORT@|$port|g" -e "s|@HTTP_PORT@|$((port + 100))|g" \
      -e "s|@TCP_SECURE_PORT@|$((port + 350))|g" -e "s|@SECURE@|$secure|g" "$here/clickhouse/config.xml" >"$dn/config.xml"
    sed -e "s|@ZK_PORT@|$zk_port|g" -e "s|@PORT_1@|$ch_cluster_port|g" -e "s|@PORT_2@|$((ch_cluster_port + 1))|g" \
      -e "s|@REPLICA@|replica$n|g" -e "s|@INTERSERVER_PORT@|$((port + 200))|g" "$here/clickhouse/cluster.xml" >"$dn/config.d/cluster.xml"
    render_clickhouse_users "$dn/users.xml"
    nohup clickhouse-server --config-file="$dn/config.xml" >"$dn/log/stdout.log" 2>&1 &
    echo $! >"$cache/run/clickhouse-cluster-$n.pid"
    wait_port "clickhouse-cluster node$n" "$port" 60 "$dn/log/clickhouse-server.err.log"
  done
  log "clickhouse-cluster: cluster seer, one shard, replicas on 127.0.0.1:$ch_cluster_port and $((ch_cluster_port + 1)) (SEER_CLICKHOUSE_CLUSTER_ADDRS)"
}

# render_clickhouse_users FILE — users.xml with the hashes of the stack's
# ClickHouse passwords.
render_clickhouse_users() {
  local sha=() u
  for u in "${clickhouse_users[@]}"; do
    sha+=(-e "s|@${u^^}_SHA256@|$(tr -d '\n' <"$secure/$u.password" | sha256sum | cut -d' ' -f1)|g")
  done
  sed "${sha[@]}" "$here/clickhouse/users.xml" >"$1"
}

# journalless_ext4 DIR — whether DIR lies on an ext4 without a journal.
journalless_ext4() {
  local src
  [ "$(findmnt -n -o FSTYPE --target "$1" 2>/dev/null)" = ext4 ] || return 1
  src=$(findmnt -n -o SOURCE --target "$1" 2>/dev/null) || return 1
  [ "$(cat "/sys/fs/ext4/$(basename "$(readlink -f "$src")")/journal_task" 2>/dev/null)" = "<none>" ]
}

# place_clickhouse_data DIR — makes DIR/data, where ClickHouse keeps its
# tables: a folder of DIR, or a link to SEER_CLICKHOUSE_DATA when set. On
# an ext4 without a journal (this project's VMs) it links to a folder in
# /dev/shm instead: there, each file ClickHouse creates makes the kernel
# skip every inode freed in the last 60 to 300 s, with a lookup each, and
# ClickHouse creates and removes some 70 files per part it writes or
# merges. That took more than half of ClickHouse's CPU and grew run after
# run; on a journaled ext4 and on tmpfs it does not happen
# (docs/performance.md, "ClickHouse's data and the filesystem"). tmpfs
# lives in memory and is emptied at reboot, after which serve and the
# tests create the tables again.
place_clickhouse_data() {
  local d=$1 want=${SEER_CLICKHOUSE_DATA:-} why
  if [ -z "$want" ] && journalless_ext4 "$d"; then
    if [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -ge $((2 * 1024 * 1024)) ]; then
      want=/dev/shm/seer-$(id -u)-$(printf %s "$d" | cksum | cut -d' ' -f1)/clickhouse-data
      why="$d is on an ext4 without a journal, which makes ClickHouse's many small files costly"
    else
      log "clickhouse: $d is on an ext4 without a journal, and /dev/shm lacks 2 GiB: data stays there (slower)"
    fi
  fi
  if [ -z "$want" ]; then
    [ -L "$d/data" ] && rm "$d/data"
    mkdir -p "$d/data"
    return 0
  fi
  mkdir -p "$want"
  if [ -d "$d/data" ] && [ ! -L "$d/data" ]; then # an earlier start's tables move along
    cp -a "$d/data/." "$want/" && rm -rf "$d/data"
  fi
  ln -sfn "$want" "$d/data"
  log "clickhouse: data in $want${why:+ ($why; SEER_CLICKHOUSE_DATA=DIR picks another)}"
}

start_clickhouse() {
  if port_open "$ch_port"; then log "clickhouse: something already answers on $ch_port; leaving it alone"; return 0; fi
  local d=$cache/clickhouse
  mkdir -p "$d/tmp" "$d/user_files" "$d/log" "$d/format_schemas" "$cache/run"
  place_clickhouse_data "$d"
  make_secrets
  sed -e "s|@DIR@|$d|g" -e "s|@TCP_PORT@|$ch_port|g" -e "s|@HTTP_PORT@|$ch_http_port|g" \
    -e "s|@TCP_SECURE_PORT@|$ch_tls_port|g" -e "s|@SECURE@|$secure|g" \
    "$here/clickhouse/config.xml" >"$d/config.xml"
  render_clickhouse_users "$d/users.xml"
  nohup clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout.log" 2>&1 &
  echo $! >"$cache/run/clickhouse.pid"
  wait_port clickhouse "$ch_port" 60 "$d/log/clickhouse-server.err.log"
}

# make_secrets — once, in $secure: a test CA; the servers' certificate (SANs
# 127.0.0.1 and localhost; Kafka, Redis and ClickHouse share it); a client
# certificate per Kafka principal (CN = the principal); a CA of another name
# with a client certificate for "serve" (an impostor, for the refusal
# tests); and a password (0600) per Kafka principal (SCRAM), Redis user and
# ClickHouse user.
make_secrets() {
  local s=$secure p
  # Passwords of principals or users added since the folder was made.
  if [ -f "$s/.done" ]; then
    for p in "${kafka_principals[@]}" "${redis_users[@]}" "${clickhouse_users[@]}"; do
      [ -f "$s/$p.password" ] || { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$s/$p.password"; chmod 600 "$s/$p.password"; }
    done
    return 0
  fi
  command -v openssl >/dev/null || die "openssl is needed to make the local broker's certificates"
  rm -rf "$s" && mkdir -p "$s/impostor" && chmod 700 "$s"
  log "kafka: making a test CA, certificates and SCRAM passwords in $s"
  (
    cd "$s"
    newca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=$1" -keyout "$1.key" -out "$1.crt" 2>/dev/null; }
    issue() { # issue CA NAME: NAME.crt and its PKCS#8 key NAME.key
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$2.tmp" -out "$2.csr" 2>/dev/null &&
        openssl pkcs8 -topk8 -nocrypt -in "$2.tmp" -out "$2.key" &&
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$2.ext" &&
        openssl x509 -req -in "$2.csr" -CA "$1.crt" -CAkey "$1.key" -CAcreateserial -days 825 -extfile "$2.ext" -out "$2.crt" 2>/dev/null &&
        rm -f "$2.tmp" "$2.csr" "$2.ext"
    }
    newca ca && newca other-ca
    issue ca server && cat server.key server.crt >server.pem
    for p in "${kafka_principals[@]}"; do issue ca "$p"; done
    (cd impostor && cp ../other-ca.crt ../other-ca.key . && issue other-ca serve && rm -f other-ca.key other-ca.srl)
    for p in "${kafka_principals[@]}" "${redis_users[@]}" "${clickhouse_users[@]}"; do
      head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 >"$p.password"
    done
    chmod 600 ./*.key ./*.password ./*.pem impostor/*
  ) || die "making the local broker's certificates failed"
  touch "$s/.done"
}

start_kafka() {
  if port_open "$kafka_port"; then log "kafka: something already answers on $kafka_port; leaving it alone"; return 0; fi
  local d=$cache/kafka p
  mkdir -p "$d/data" "$d/log" "$cache/run"
  make_secrets
  sed -e "s|@DATA@|$d/data|g" -e "s|@PORT@|$kafka_port|g" -e "s|@CTL_PORT@|$kafka_ctl_port|g" \
    -e "s|@SASL_PORT@|$kafka_sasl_port|g" -e "s|@MTLS_PORT@|$kafka_mtls_port|g" -e "s|@SECURE@|$secure|g" \
    "$here/kafka/server.properties" >"$d/server.properties"
  local java_opts=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$here/kafka/log4j2.properties" "-Dkafka.logs.dir=$d/log")
  # Storage formatted before the secure listeners has no SCRAM users: this
  # is a local test broker, so it starts again from empty.
  if [ -f "$d/data/meta.properties" ] && [ ! -f "$d/data/.scram" ]; then
    log "kafka: the local storage predates the SCRAM users; formatting it again (local test data is dropped)"
    rm -rf "$d/data" && mkdir -p "$d/data"
  fi
  if [ ! -f "$d/data/meta.properties" ]; then
    log "kafka: formatting KRaft storage with SCRAM users ${kafka_principals[*]} (first start)"
    local id scram=()
    id=$(java -cp "$d/lib/*" "${java_opts[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    for p in "${kafka_principals[@]}"; do
      scram+=(--add-scram "SCRAM-SHA-512=[name=$p,password=$(cat "$secure/$p.password")]"
        --add-scram "SCRAM-SHA-256=[name=$p,password=$(cat "$secure/$p.password")]")
    done
    java -cp "$d/lib/*" "${java_opts[@]}" kafka.tools.StorageTool format \
      -t "$id" -c "$d/server.properties" --standalone "${scram[@]}" >"$d/log/format.log" 2>&1 ||
      { cat "$d/log/format.log" >&2; die "kafka storage format failed"; }
    touch "$d/data/.scram"
  fi
  nohup java -cp "$d/lib/*" "${java_opts[@]}" kafka.Kafka "$d/server.properties" >"$d/log/stdout.log" 2>&1 &
  echo $! >"$cache/run/kafka.pid"
  wait_port kafka "$kafka_port" 90 "$d/log/server.log"
  wait_port kafka-sasl "$kafka_sasl_port" 30 "$d/log/server.log"
  # The default config's ACLs for each principal (seer acls), as admin.
  if [ -x "$repo/bin/seer" ]; then
    SEER_KAFKA_BROKERS=127.0.0.1:$kafka_sasl_port SEER_KAFKA_TLS_CA_FILE=$secure/ca.crt SEER_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 \
      SEER_KAFKA_SASL_USERNAME=admin SEER_KAFKA_SASL_PASSWORD_FILE=$secure/admin.password \
      "$repo/bin/seer" acls --apply --redis=false >"$d/log/acls.log" 2>&1 || { cat "$d/log/acls.log" >&2; die "creating the Kafka ACLs failed"; }
    log "kafka: least-privilege ACLs of serve, monitor, registry, loadtest, labels and features created (log: $d/log/acls.log)"
  else
    log "kafka: bin/seer is not built; create the ACLs later with: bin/seer acls --apply (as admin on 127.0.0.1:$kafka_sasl_port)"
  fi
}

# cmd_up [SERVICE...] — SERVICE is kafka, redis, redis-cluster, clickhouse or
# alertmanager; none means all but alertmanager (and the Python venv).
cmd_up() {
  [ $# -eq 0 ] && set -- python redis redis-cluster clickhouse kafka
  cmd_install "$@"
  local s
  for s in "$@"; do
    case $s in
      redis) start_redis ;;
      redis-cluster) start_redis_cluster ;;
      clickhouse) start_clickhouse ;;
      clickhouse-cluster) start_clickhouse_cluster ;;
      kafka) start_kafka ;;
      alertmanager) start_alertmanager ;;
      python) ;;
      *) die "unknown service $s (want kafka, redis, redis-cluster, clickhouse, clickhouse-cluster or alertmanager)" ;;
    esac
  done
  log "stack is up (cache: $cache); stop it with: make stack-down"
}

# ------------------------------------------------------------------- stop ---

stop_one() {
  local name=$1 pidf=$cache/run/$1.pid pid i
  [ -f "$pidf" ] || return 0
  pid=$(cat "$pidf")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { log "$name did not stop in 30s; killing it"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  rm -f "$pidf"
}

cmd_down() {
  local i
  # down clickhouse-cluster stops only the cluster (the tests that start it).
  stop_one clickhouse-cluster-1
  stop_one clickhouse-cluster-2
  stop_one zookeeper
  [ "${1:-}" = clickhouse-cluster ] && return 0
  for i in 0 1 2; do stop_one "redis-cluster-$((redis_cluster_port + i))"; done
  stop_one alertmanager
  stop_one kafka
  stop_one clickhouse
  stop_one redis
}

cmd_status() {
  local rc=0 s
  # NAME PORT PIDFILE (the Redis Cluster's first node stands for it)
  for s in "kafka $kafka_port kafka" "redis $redis_port redis" "redis-cluster $redis_cluster_port redis-cluster-$redis_cluster_port" "clickhouse $ch_port clickhouse"; do
    set -- $s
    if port_open "$2"; then
      local who="started elsewhere"
      [ -f "$cache/run/$3.pid" ] && kill -0 "$(cat "$cache/run/$3.pid")" 2>/dev/null && who="pid $(cat "$cache/run/$3.pid")"
      printf '%-13s up    127.0.0.1:%s (%s)\n' "$1" "$2" "$who"
    else
      printf '%-13s down  127.0.0.1:%s\n' "$1" "$2"
      rc=1
    fi
  done
  return $rc
}

cmd_env() {
  if [ "${1:-}" = --secure ]; then
    local s=$secure
    [ -f "$s/.done" ] || die "no certificates or passwords in $s; run: deploy/local/stack.sh up"
    cat <<EOF
export SEER_KAFKA_BROKERS=127.0.0.1:$kafka_sasl_port
export SEER_KAFKA_TLS_CA_FILE=$s/ca.crt
export SEER_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export SEER_KAFKA_SASL_USERNAME=serve
export SEER_KAFKA_SASL_PASSWORD_FILE=$s/serve.password
EOF
    return 0
  fi
  cat <<EOF
export SEER_CACHE_DIR=$cache
export SEER_KAFKA_SASL_PORT=$kafka_sasl_port
export SEER_KAFKA_MTLS_PORT=$kafka_mtls_port
export SEER_REDIS_TLS_PORT=$redis_tls_port
export SEER_CLICKHOUSE_TLS_PORT=$ch_tls_port
export SEER_KAFKA_BROKERS=127.0.0.1:$kafka_port
export SEER_REDIS_ADDR=127.0.0.1:$redis_port
export SEER_CLICKHOUSE_CLUSTER_ADDRS=127.0.0.1:$ch_cluster_port,127.0.0.1:$((ch_cluster_port + 1))
export SEER_REDIS_CLUSTER_ADDRS=127.0.0.1:$redis_cluster_port,127.0.0.1:$((redis_cluster_port + 1)),127.0.0.1:$((redis_cluster_port + 2))
export SEER_CLICKHOUSE_ADDR=127.0.0.1:$ch_port
export SEER_ONNXRUNTIME_LIB=$cache/onnxruntime/libonnxruntime.so.1
export SEER_PYTHON=$cache/venv/bin/python
export SEER_PYTHON_EVIDENTLY=$cache/venv-evidently/bin/python
EOF
}

case ${1:-} in
  install) shift; [ $# -eq 0 ] && set -- kafka python; cmd_install "$@" ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  env) shift; cmd_env "$@" ;;
  *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
