#!/usr/bin/env bash
# Measures whether the dispatcher gives memory back after a burst of events:
# for each case, a fresh server, 2 listeners (curl), then COUNT events of
# about BYTES bytes POSTed by 4 parallel connections as fast as the server
# takes them. Prints the server's RSS (VmRSS) before the burst (2 s after
# the listeners connected), its peak during the burst (sampled every
# 0.1 s), and AFTER (default 10 s) after the last POST was answered, with
# how often the server logged "memory returned to the system", the POSTs
# accepted and the events each listener received (fewer: it was dropped
# as too slow, which a burst of large events can do on a busy machine).
#
#   scripts/bench-burst-memory.sh                  # the three cases below
#   BIN=/tmp/old_dispatcher scripts/bench-burst-memory.sh   # another build
#   CASES="small" scripts/bench-burst-memory.sh
#   CASES=trickle AFTER=60 scripts/bench-burst-memory.sh
#
# Cases: large = 3000 events of 61 KB (defaults otherwise); small = 300 of
# 8 KB; huge = 400 of 1 MB with MAX_BODY_BYTES=1100000 and
# SUBSCRIBER_BUFFER_BYTES=8388608; trickle = 150 of 3 MB with
# MAX_BODY_BYTES=4194304 and SUBSCRIBER_BUFFER_BYTES=134217728, two more
# listeners that read 100 bytes a second (stalled: dropped once a write
# waits WRITE_TIMEOUT), and 2 small events a second after the burst until
# the last sample: light traffic going on. Its listener counts are those
# of the two that read.
#
# Needs: go (unless BIN is given), curl. Environment: BIN, CASES, AFTER
# (seconds, default 10), PORT_BASE (29810), OUT (a new temp dir).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CASES=${CASES:-large small huge}
AFTER=${AFTER:-10}
PORT_BASE=${PORT_BASE:-29810}
OUT=${OUT:-$(mktemp -d -t burst-memory.XXXXXX)}
PORT=$PORT_BASE
APORT=$((PORT_BASE + 1))
if [ -z "${BIN:-}" ]; then
	BIN=$OUT/event_dispatcher
	(cd "$ROOT" && go build -o "$BIN" ./cmd/event_dispatcher)
fi

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# event BYTES FILE: a START-like event padded to about BYTES bytes.
event() {
	local pad
	pad=$(head -c "$1" /dev/zero | tr '\0' 'x')
	printf '{"session_id":"burst","event_name":"START","timestamp":1,"version":1,"data":{"pad":"%s"}}' "$pad" >"$2"
}

run_case() { # name count bytes stalled trickle env...
	local name=$1 count=$2 bytes=$3 stalled=$4 trickle=$5
	shift 5
	local body=$OUT/$name.json
	event "$bytes" "$body"
	env PORT=$PORT ADMIN_PORT=$APORT LOG_LEVEL=info LOG_FORMAT=json "$@" "$BIN" >"$OUT/$name.log" 2>&1 &
	local server=$!
	pids+=("$server")
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
	local l
	for l in 1 2; do
		(curl -sN "http://127.0.0.1:$PORT/events" | LC_ALL=C grep -c '^data:' >"$OUT/$name.got$l" || true) &
	done
	local slow=()
	for _ in $(seq "$stalled"); do
		curl -sN --limit-rate 100 -o /dev/null "http://127.0.0.1:$PORT/events" &
		slow+=($!)
		pids+=($!)
	done
	sleep 2
	local before peak=0 now
	before=$(rss "$server")
	(
		while kill -0 "$server" 2>/dev/null; do
			now=$(rss "$server" 2>/dev/null || echo 0)
			[ "${now:-0}" -gt "$peak" ] && peak=$now && echo "$peak" >"$OUT/$name.peak"
			sleep 0.1
		done
	) &
	local sampler=$!
	: >"$OUT/$name.cfg"
	local i
	for i in $(seq "$count"); do
		[ "$i" -gt 1 ] && echo next >>"$OUT/$name.cfg"
		printf 'url = "http://127.0.0.1:%s/api/events"\ndata-binary = "@%s"\nheader = "Content-Type: application/json"\nwrite-out = "%%{http_code}\\n"\noutput = "/dev/null"\n' \
			"$PORT" "$body" >>"$OUT/$name.cfg"
	done
	curl -sS --no-progress-meter --parallel --parallel-max 4 -K "$OUT/$name.cfg" >"$OUT/$name.codes" || true
	local trickler=
	if [ "$trickle" -gt 0 ]; then
		(
			while kill -0 "$server" 2>/dev/null; do
				curl -s -o /dev/null -H 'Content-Type: application/json' --data-binary '{"event_name":"POS","n":1}' \
					"http://127.0.0.1:$PORT/api/events" || true
				sleep "$(awk -v r="$trickle" 'BEGIN { print 1 / r }')"
			done
		) &
		trickler=$!
	fi
	sleep "$AFTER"
	local after accepted reclaims
	after=$(rss "$server")
	accepted=$(grep -c '^20[04]$' "$OUT/$name.codes" || true)
	reclaims=$(grep -c 'memory returned to the system' "$OUT/$name.log" || true)
	[ -n "$trickler" ] && kill "$trickler" 2>/dev/null
	kill -TERM "$server"
	wait "$server" 2>/dev/null || true
	kill "$sampler" 2>/dev/null || true
	# A rate-limited curl sleeps through the server's end.
	for l in "${slow[@]}"; do kill "$l" 2>/dev/null || true; done
	wait
	peak=$(cat "$OUT/$name.peak" 2>/dev/null || echo 0)
	awk -v n="$name" -v c="$count" -v b="$bytes" -v r0="$before" -v rp="$peak" -v r1="$after" -v a="$accepted" -v rc="$reclaims" \
		-v g1="$(cat "$OUT/$name.got1")" -v g2="$(cat "$OUT/$name.got2")" 'BEGIN {
		printf "| %s | %d × %d B | %.1f | %.1f | %.1f | %+.1f | %d | %d of %d | %s / %s |\n", n, c, b, r0/1024, rp/1024, r1/1024, (r1-r0)/1024, rc, a, c, g1, g2 }'
}

echo "| case | events | RSS before MiB | peak MiB | ${AFTER} s after MiB | after − before MiB | memory returned (log lines) | POSTs accepted | received by each listener |"
echo "|---|---|---:|---:|---:|---:|---:|---|---|"
for c in $CASES; do
	case $c in
	large) run_case large 3000 61000 0 0 ;;
	small) run_case small 300 8000 0 0 ;;
	huge) run_case huge 400 1000000 0 0 MAX_BODY_BYTES=1100000 SUBSCRIBER_BUFFER_BYTES=8388608 ;;
	trickle) run_case trickle 150 3000000 2 2 MAX_BODY_BYTES=4194304 SUBSCRIBER_BUFFER_BYTES=134217728 ;;
	*) echo "unknown case $c" >&2; exit 2 ;;
	esac
done
