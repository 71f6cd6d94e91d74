# Sourced by the load benchmarks: `wrk_run URL` warms up for 2 s, then runs
# wrk -t$THREADS -c$CONNS -d$DURATION and prints "req/s p50_ms p99_ms errors"
# (errors: wrk's non-2xx count and "sock" for socket errors, or 0).

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}'; }

wrk_run() {
  local out rps p50 p99 bad
  wrk -t"$THREADS" -c"$CONNS" -d2s "$1" >/dev/null
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$1")
  rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%"{print $2}' <<<"$out" | to_ms)
  bad=$(awk '/Non-2xx/{print $5} /Socket errors/{print "sock"}' <<<"$out" | tr '\n' ' ')
  printf '%s %s %s %s\n' "$rps" "$p50" "$p99" "${bad:-0}"
}
