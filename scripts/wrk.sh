# Sourced by the load benchmarks.
#
# `wrk_once URL DURATION`: one run of wrk -t$THREADS -c$CONNS -dDURATION,
# no warm-up; prints "req/s p50_ms p99_ms errors" (errors: wrk's non-2xx
# count and its socket errors by kind, `timeout:3`, joined by "+", or 0).
# `wrk_run URL`: warms up for 2 s, then `wrk_once URL $DURATION`.

to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}'; }

wrk_once() {
  local out rps p50 p99 bad
  out=$(wrk -t"$THREADS" -c"$CONNS" -d"$2" --latency "$1")
  rps=$(awk '/^Requests\/sec/{printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out" | to_ms)
  p99=$(awk '$1=="99%"{print $2}' <<<"$out" | to_ms)
  bad=$(awk '/Non-2xx/{print $5}
    /Socket errors/{for (i = 3; i < NF; i += 2) { v = $(i + 1); sub(",", "", v); if (v > 0) print $i ":" v }}' <<<"$out" | paste -sd+ -)
  printf '%s %s %s %s\n' "$rps" "$p50" "$p99" "${bad:-0}"
}

wrk_run() {
  wrk -t"$THREADS" -c"$CONNS" -d2s "$1" >/dev/null
  wrk_once "$1" "$DURATION"
}
