# loadtest/serve.sh — sourced by the benchmark scripts.
#
# start_serve LOG — starts bin/seer serve with the environment as it is,
# sets serve_pid, and waits (up to 30 s) until /readyz on $SEER_HTTP says
# ready; exits with serve's log when it dies. Its input topic may not
# exist before the load creates it, so not ready yet only warns.
start_serve() {
  local log=$1
  bin/seer serve >"$log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 1 120); do
    curl -fsS "http://$SEER_HTTP/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$serve_pid" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.25
  done
  echo "warning: seer serve is not ready after 30 s; the load goes on: $(curl -sS "http://$SEER_HTTP/readyz" 2>&1 | tr '\n' ' ')"
}
