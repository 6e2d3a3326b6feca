#!/usr/bin/env bash
# Scale-out figures of BENCHMARKS.md, in one run on this machine: the same
# total load against one replica alone, three replicas joined by Redis and
# three joined by NATS (loss, p99, CPU per delivery, the broker's own CPU),
# then the highest sustainable rate to 1000 listeners spread over three
# replicas. Every server is fresh; load tool, replicas and broker share the
# machine.
#
# Needs: go, jq, redis-server, nats-server, and a cmd/loadtest that takes
# several -url (a comma-separated list).
#
# Environment:
#   OUT        where binaries, logs and JSON reports go (default: a new temp dir)
#   LOADTEST   a prebuilt load tool (default: built from this repository)
#   LISTENERS  listeners of the same-load comparison (default 300)
#   RATE       events/s of the same-load comparison (default 300)
#   DURATION   default 20s
#   FIND_MAX   0 skips the maximum-rate search (default 1)
#   BROKERS    default "redis nats"
#   PORT_BASE  default 31710
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d -t dispatcher-replicas.XXXXXX)}
LISTENERS=${LISTENERS:-300}
RATE=${RATE:-300}
DURATION=${DURATION:-20s}
FIND_MAX=${FIND_MAX:-1}
BROKERS=${BROKERS:-redis nats}
# Below the ephemeral range (32768-60999 on Linux), which no outgoing
# connection can take: replicas on PORT_BASE+1.., Redis +10, NATS +11.
PORT_BASE=${PORT_BASE:-31710}
ulimit -n 65536 2>/dev/null || true

mkdir -p "$OUT"
echo "building into $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/event_dispatcher" ./cmd/event_dispatcher)
LOADTEST=${LOADTEST:-}
if [ -z "$LOADTEST" ]; then
	(cd "$ROOT" && go build -o "$OUT/loadtest" ./cmd/loadtest)
	LOADTEST=$OUT/loadtest
fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# cpu_ticks PID: user+system clock ticks of a process so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_broker() {
	case $1 in
	redis)
		redis-server --port $((PORT_BASE + 10)) --bind 127.0.0.1 --save "" --appendonly no --loglevel warning >"$OUT/redis.log" 2>&1 &
		BROKER_PID=$!
		BROKER_URL=redis://127.0.0.1:$((PORT_BASE + 10))
		;;
	nats)
		nats-server -a 127.0.0.1 -p $((PORT_BASE + 11)) >"$OUT/nats.log" 2>&1 &
		BROKER_PID=$!
		BROKER_URL=nats://127.0.0.1:$((PORT_BASE + 11))
		;;
	esac
	PIDS+=("$BROKER_PID")
	sleep 0.5
}

# start_replicas N [BROKER_URL]: URLS and SERVER_PIDS, comma-separated.
start_replicas() {
	URLS= SERVER_PIDS=
	for i in $(seq 1 "$1"); do
		local port=$((PORT_BASE + i))
		PORT=$port ADMIN_PORT=off LOG_LEVEL=warn BROKER_URL=${2:-} "$OUT/event_dispatcher" >"$OUT/replica-$port.log" 2>&1 &
		PIDS+=("$!")
		SERVER_PIDS+=${SERVER_PIDS:+,}$!
		URLS+=${URLS:+,}http://127.0.0.1:$port
		for _ in $(seq 100); do
			curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
			sleep 0.1
		done
		curl -sf "http://127.0.0.1:$port/health" >/dev/null || {
			echo "bench-replicas.sh: replica on port $port did not start:" >&2
			cat "$OUT/replica-$port.log" >&2
			exit 1
		}
		if [ -n "${2:-}" ]; then
			for _ in $(seq 100); do
				curl -s "http://127.0.0.1:$port/health" | grep -q '"broker":"connected"' && break
				sleep 0.1
			done
		fi
	done
}

stop_all() { cleanup; PIDS=(); sleep 1; }

# run NAME REPLICAS BROKER LOADTEST-ARGS...: one fresh setup, one load run.
run() {
	local name=$1 n=$2 broker=$3
	shift 3
	BROKER_URL= BROKER_PID=
	[ "$broker" != none ] && start_broker "$broker"
	start_replicas "$n" "$BROKER_URL"
	local before=0
	[ -n "$BROKER_PID" ] && before=$(cpu_ticks "$BROKER_PID")
	echo "== $name: $LOADTEST -url $URLS $*" >&2
	"$LOADTEST" -url "$URLS" -server-pid "$SERVER_PIDS" -json "$@" >"$OUT/$name.json" || echo "   (run reported a failure: see $OUT/$name.json)" >&2
	if [ -n "$BROKER_PID" ]; then
		echo $(($(cpu_ticks "$BROKER_PID") - before)) >"$OUT/$name.broker-ticks"
	fi
	for u in ${URLS//,/ }; do curl -s "$u/health"; echo; done >"$OUT/$name.health"
	stop_all
}

LOAD=(-listeners "$LISTENERS" -publishers 6 -rate "$RATE" -duration "$DURATION" -settle 10s)
run single 1 none "${LOAD[@]}"
for b in $BROKERS; do
	run "three-$b" 3 "$b" "${LOAD[@]}"
done
if [ "$FIND_MAX" = 1 ]; then
	run max-single 1 none -listeners 1000 -publishers 6 -find-max -step 5s -settle 10s
	for b in $BROKERS; do
		run "max-three-$b" 3 "$b" -listeners 1000 -publishers 6 -find-max -step 5s -settle 10s
	done
fi
echo "reports in $OUT" >&2
