#!/usr/bin/env bash
# Measures what forwarding every event to Kinesis costs, in one run on this
# machine, against kinesalite (npm install -g kinesalite) on loopback:
#
#  1. CPU per accepted POST, forwarding off then on, same load (RATE
#     events/s for DURATION, one listener), fresh server each time;
#  2. the highest rate forwarded without a drop: rates in RATES, each for
#     STEP_DURATION, with a small buffer (STEP_BUFFER_BYTES) so that a
#     forwarder falling behind shows as drops within the step; a step passes
#     when every accepted event was put, none dropped, and the buffer empty
#     within 2 s of the end.
#
# With PROFILE=1, a 5 s CPU profile of the dispatcher is taken during the
# last forwarding-on run (admin port PORT_BASE+2) and its top printed.
#
# Needs: go, curl, jq, kinesalite. Environment: RATE (default 2000), DURATION
# (10s), PAIRS (3: off/on runs, alternated), RATES ("1000 2000 4000 8000 12000 16000"), STEP_DURATION (5s),
# STEP_BUFFER_BYTES (2097152), SHARDS (4), PARTITION_KEY_FIELD (empty:
# random keys; the default fixture has session_id), OUT (a new temp dir),
# PORT_BASE (29790).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-2000}
DURATION=${DURATION:-10s}
PAIRS=${PAIRS:-3}
PROFILE=${PROFILE:-0}
RATES=${RATES:-1000 2000 4000 8000 12000 16000}
STEP_DURATION=${STEP_DURATION:-5s}
STEP_BUFFER_BYTES=${STEP_BUFFER_BYTES:-2097152}
SHARDS=${SHARDS:-4}
PARTITION_KEY_FIELD=${PARTITION_KEY_FIELD:-}
OUT=${OUT:-$(mktemp -d -t kinesis-bench.XXXXXX)}
PORT_BASE=${PORT_BASE:-29790}
KPORT=$((PORT_BASE + 1))
APORT=$((PORT_BASE + 2))
DPORT=$PORT_BASE

for tool in go curl jq kinesalite; do
	command -v "$tool" >/dev/null || { echo "bench-kinesis.sh: needs $tool" >&2; exit 1; }
done
cd "$ROOT"
go build -o "$OUT/event_dispatcher" ./cmd/event_dispatcher
go build -o "$OUT/loadtest" ./cmd/loadtest

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

kinesalite --port "$KPORT" --createStreamMs 0 --shardLimit 100000 >"$OUT/kinesalite.log" 2>&1 &
KPID=$!
pids+=("$KPID")
kcall() { # target body
	curl -sf -X POST "http://127.0.0.1:$KPORT/" -H 'Content-Type: application/x-amz-json-1.1' \
		-H "X-Amz-Target: Kinesis_20131202.$1" -H 'X-Amz-Date: 20260101T000000Z' \
		-H 'Authorization: AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=0' \
		-d "$2"
}
for _ in $(seq 100); do kcall ListStreams '{}' >/dev/null 2>&1 && break; sleep 0.1; done
stream=0
new_stream() { # a fresh stream per server run
	stream=$((stream + 1))
	kcall CreateStream "{\"StreamName\":\"bench$stream\",\"ShardCount\":$SHARDS}" >/dev/null
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# serve NAME [VAR=value...]: starts the dispatcher, sets DPID.
serve() {
	local name=$1
	shift
	env PORT=$DPORT ADMIN_PORT=$APORT LOG_LEVEL=warn AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=AKIDBENCH \
		AWS_SECRET_ACCESS_KEY=x AWS_EC2_METADATA_DISABLED=true AWS_ENDPOINT_URL_KINESIS="http://127.0.0.1:$KPORT" \
		"$@" "$OUT/event_dispatcher" >"$OUT/$name.log" 2>&1 &
	DPID=$!
	pids+=("$DPID")
	for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DPORT/health" >/dev/null && return; sleep 0.05; done
	echo "server $name did not start" >&2
	exit 1
}
stop() { kill "$DPID"; wait "$DPID" 2>/dev/null || true; }
health() { curl -sf "http://127.0.0.1:$DPORT/health"; }
load() { # rate duration json
	"$OUT/loadtest" -url "http://127.0.0.1:$DPORT" -rate "$1" -duration "$2" -listeners 1 -publishers 8 \
		-server-pid "$DPID" -json -progress 0 >"$3" 2>/dev/null || true
}

echo "== CPU per accepted POST at $RATE/s for $DURATION, one listener, $PAIRS off/on pairs (machine: $(nproc) cores, shared)"
printf '%-8s %10s %8s %12s %14s %10s %10s\n' forward accepted cpu_s us_per_post kinesalite_s put dropped
for pair in $(seq "$PAIRS"); do
	for mode in off on; do
		if [ "$mode" = on ]; then
			new_stream
			serve "$mode" KINESIS_STREAM_NAME="bench$stream" KINESIS_PARTITION_KEY_FIELD="$PARTITION_KEY_FIELD"
		else
			serve "$mode"
		fi
		k0=$(cpu_ticks "$KPID")
		prof=
		if [ "$PROFILE" = 1 ] && [ "$mode" = on ] && [ "$pair" = "$PAIRS" ]; then
			(sleep 2; curl -sf -o "$OUT/on.pprof" "http://127.0.0.1:$APORT/debug/pprof/profile?seconds=5") &
			prof=$!
		fi
		load "$RATE" "$DURATION" "$OUT/cpu-$mode-$pair.json"
		[ -z "$prof" ] || wait "$prof" 
		sleep 2 # the last partial batch
		k1=$(cpu_ticks "$KPID")
		h=$(health)
		stop
		jq -r --arg m "$mode" --argjson kt "$((k1 - k0))" --argjson hz "$(getconf CLK_TCK)" --argjson h "$h" \
			'[$m, .result.posts.accepted, .result.server.cpu_seconds,
			  (.result.server.cpu_seconds * 1e6 / .result.posts.accepted | floor),
			  ($kt / $hz), ($h.kinesis_put // 0), ($h.kinesis_dropped // 0)] | @tsv' "$OUT/cpu-$mode-$pair.json" |
			awk -F'\t' '{printf "%-8s %10s %8.2f %12s %14.2f %10s %10s\n", $1, $2, $3, $4, $5, $6, $7}'
	done
done
if [ -s "$OUT/on.pprof" ]; then
	echo
	echo "== Where the dispatcher's time goes, forwarding on (5 s profile, top by cumulative)"
	go tool pprof -top -cum -nodecount=40 "$OUT/event_dispatcher" "$OUT/on.pprof" 2>/dev/null | sed -n '1,48p'
fi

echo
echo "== Highest rate forwarded without a drop (KINESIS_BUFFER_BYTES=$STEP_BUFFER_BYTES, $SHARDS shards, $STEP_DURATION per step)"
printf '%8s %10s %10s %10s %10s %8s\n' target achieved accepted put dropped pass
best=0
for r in $RATES; do
	new_stream
	serve "step$r" KINESIS_STREAM_NAME="bench$stream" KINESIS_PARTITION_KEY_FIELD="$PARTITION_KEY_FIELD" \
		KINESIS_BUFFER_BYTES="$STEP_BUFFER_BYTES"
	load "$r" "$STEP_DURATION" "$OUT/step-$r.json"
	sleep 2
	h=$(health)
	stop
	read -r achieved accepted < <(jq -r '[(.result.achieved_rate | floor), .result.posts.accepted] | @tsv' "$OUT/step-$r.json")
	put=$(jq -r '.kinesis_put' <<<"$h")
	dropped=$(jq -r '.kinesis_dropped' <<<"$h")
	buffered=$(jq -r '.kinesis_buffered_bytes' <<<"$h")
	pass=no
	if [ "$put" = "$accepted" ] && [ "$dropped" = 0 ] && [ "$buffered" = 0 ] && [ "$accepted" -gt 0 ]; then
		pass=yes
		best=$achieved
	fi
	printf '%8s %10s %10s %10s %10s %8s\n' "$r" "$achieved" "$accepted" "$put" "$dropped" "$pass"
	[ "$pass" = yes ] || break
done
echo "highest rate forwarded without a drop: $best events/s"
echo "reports in $OUT"
