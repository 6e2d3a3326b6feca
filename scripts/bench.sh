#!/usr/bin/env bash
# Runs the four load scenarios of BENCHMARKS.md against the dispatcher and
# against the reference hub, one fresh server per run, load tool and server
# on this machine, and prints each figure side by side with the ratio
# dispatcher / reference.
#
# Needs: go, curl, jq, and the reference hub's source (a directory with its
# main package): REFERENCE_HUB_DIR, default ../shared/bench/reference-hub
# next to this repository.
#
# Environment:
#   SCENARIOS    which to run, default "ingest fanout idle slow"
#   SERVERS      default "dispatcher reference"
#   OUT          where binaries, logs and JSON reports go (default: a new temp dir)
#   PORT_BASE    dispatcher on PORT_BASE, reference on PORT_BASE+1 (default 39690)
#   FANOUT_LISTENERS, IDLE_LISTENERS  default 1000 and 10000
#   PROFILE=1    afterwards, profile both servers under fan-out at PROFILE_RATE
#                events/s (default 300) to FANOUT_LISTENERS: a pprof CPU profile
#                of the dispatcher (a wrapper binary built in OUT adds
#                net/http/pprof; the product is unchanged) and, when perf is
#                installed, perf profiles of both
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REFERENCE_HUB_DIR=${REFERENCE_HUB_DIR:-$ROOT/../shared/bench/reference-hub}
SCENARIOS=${SCENARIOS:-ingest fanout idle slow}
SERVERS=${SERVERS:-dispatcher reference}
OUT=${OUT:-$(mktemp -d -t dispatcher-bench.XXXXXX)}
PORT_BASE=${PORT_BASE:-39690}
FANOUT_LISTENERS=${FANOUT_LISTENERS:-1000}
IDLE_LISTENERS=${IDLE_LISTENERS:-10000}

# 10,000 listeners need 10,000 descriptors in the load tool and as many in
# the server (Go raises its soft limit to the hard one by itself, but the
# hard one must allow it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_LISTENERS + 200)) ]; then
	echo "bench.sh: ulimit -n is $(ulimit -n), too low for $IDLE_LISTENERS listeners" >&2
	exit 1
fi
for tool in go curl jq; do
	command -v "$tool" >/dev/null || { echo "bench.sh: $tool is required" >&2; exit 1; }
done

mkdir -p "$OUT"
echo "building into $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/event_dispatcher" ./cmd/event_dispatcher)
(cd "$ROOT" && go build -o "$OUT/loadtest" ./cmd/loadtest)
(cd "$REFERENCE_HUB_DIR" && go build -o "$OUT/reference-hub" .)

SERVER_PID=
PORT=

# start_server NAME: a fresh server, its pid in SERVER_PID, its port in PORT.
# The dispatcher runs with its defaults but LOG_LEVEL=warn: the reference
# logs nothing per connection either.
start_server() {
	case $1 in
	dispatcher)
		PORT=$PORT_BASE
		PORT=$PORT LOG_LEVEL=warn "$OUT/event_dispatcher" >"$OUT/$1.log" 2>&1 &
		;;
	reference)
		PORT=$((PORT_BASE + 1))
		"$OUT/reference-hub" -addr "127.0.0.1:$PORT" >"$OUT/$1.log" 2>&1 &
		;;
	esac
	SERVER_PID=$!
	for _ in $(seq 100); do
		curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health" && return 0
		sleep 0.1
	done
	echo "bench.sh: $1 did not start, see $OUT/$1.log" >&2
	exit 1
}

stop_server() {
	kill -TERM "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
}
trap '[ -n "$SERVER_PID" ] && kill -KILL "$SERVER_PID" 2>/dev/null; true' EXIT

scenario_args() {
	case $1 in
	ingest) echo "-listeners 1 -publishers 32 -rate 0 -duration 10s" ;;
	fanout) echo "-listeners $FANOUT_LISTENERS -publishers 32 -find-max -start-rate 100 -factor 1.5 -step 5s -refine 2" ;;
	idle) echo "-listeners $IDLE_LISTENERS -publishers 1 -events 1 -connect-timeout 60s" ;;
	slow) echo "-listeners 10 -stall 1 -publishers 4 -rate 500 -duration 20s" ;;
	esac
}

for scenario in $SCENARIOS; do
	for server in $SERVERS; do
		start_server "$server"
		echo "$scenario: $server (pid $SERVER_PID)" >&2
		# shellcheck disable=SC2046
		"$OUT/loadtest" -url "http://127.0.0.1:$PORT" -server-pid "$SERVER_PID" -json \
			$(scenario_args "$scenario") >"$OUT/$scenario-$server.json"
		stop_server
	done
done

# figure SCENARIO SERVER JQ: one number from a report, "-" when missing.
figure() {
	local f="$OUT/$1-$2.json"
	[ -s "$f" ] || { echo "-"; return; }
	jq -r "($3) // \"-\"" "$f"
}

row() { # row LABEL SCENARIO JQ [better]
	local d r ratio
	d=$(figure "$2" dispatcher "$3")
	r=$(figure "$2" reference "$3")
	ratio=$(jq -nr --arg d "$d" --arg r "$r" \
		'if ($d|test("^[0-9.eE+-]+$")) and ($r|test("^[0-9.eE+-]+$")) and ($r|tonumber) != 0
		 then (($d|tonumber)/($r|tonumber)*100|round/100|tostring) + "x" else "-" end')
	printf '%-52s %14s %14s %8s  %s\n' "$1" "$d" "$r" "$ratio" "${4:-}"
}

echo
echo "date $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(go version | cut -d' ' -f3), reports in $OUT"
printf '%-52s %14s %14s %8s  %s\n' "figure" "dispatcher" "reference" "ratio" ""
has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }
if has ingest; then
	row "(a) ingest: server CPU µs per accepted POST" ingest '.result.server.cpu_us_per_event*10|round/10' "lower is better"
	row "(a) ingest: accepted POSTs/s" ingest '.result.achieved_rate|round'
fi
if has fanout; then
	row "(b) fan-out $FANOUT_LISTENERS: max events/s (<0.1% loss, p99<=1s)" fanout '.find_max.max_rate|round' "higher is better"
	row "(b) fan-out: deliveries/s at that rate" fanout '.find_max.steps[.find_max.best_step].deliveries.per_second|round'
	row "(b) fan-out: p99 ms at that rate" fanout '.find_max.steps[.find_max.best_step].latency.p99_ms*10|round/10'
	row "(b) fan-out: server CPU µs per delivery there" fanout '.find_max.steps[.find_max.best_step].server.cpu_us_per_delivery*1000|round/1000'
fi
if has idle; then
	row "(c) idle $IDLE_LISTENERS: server RSS bytes per listener" idle '.server.rss_per_listener_bytes' "lower is better"
	row "(c) idle: ms for one event to reach all" idle '.result.latency.max_ms*10|round/10' "lower is better"
	row "(c) idle: listeners connected" idle '.connect.connected'
fi
if has slow; then
	row "(d) slow: loss % for the 10 readers" slow '.result.deliveries.loss_pct' "must be 0"
	row "(d) slow: failed POSTs (rejected + transport)" slow '.result.posts.rejected + .result.posts.transport_errors' "must be 0"
	row "(d) slow: stalled listener dropped by the server" slow '.stalled.dropped_by_server' "must be 1"
	row "(d) slow: server RSS KB start" slow '.result.server.rss_start_kb'
	row "(d) slow: server RSS KB peak" slow '.result.server.rss_peak_kb'
	row "(d) slow: server RSS KB end" slow '.result.server.rss_end_kb'
fi

[ "${PROFILE:-0}" = 1 ] || exit 0

# The dispatcher as cmd/event_dispatcher wires it, plus /debug/pprof/, built
# as a scratch module next to the reports.
mkdir -p "$OUT/prof"
cat >"$OUT/prof/main.go" <<'GO'
package main

import (
	"log"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/server"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	lg := zerolog.New(os.Stderr).Level(cfg.Level)
	hub, err := broadcast.New(broadcast.Options{
		QueueSize: cfg.PublishQueueSize, MaxLag: cfg.MaxFanoutLag, MaxListeners: cfg.MaxSubscribers, BufferBytes: cfg.SubscriberBufferBytes,
		WriteTimeout: cfg.WriteTimeout, Heartbeat: cfg.HeartbeatInterval, MaxStreamDuration: cfg.MaxStreamDuration, Logger: lg,
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := server.New(server.Options{Hub: hub, Logger: lg, MaxBodyBytes: cfg.MaxBodyBytes, BodyReadTimeout: cfg.BodyReadTimeout,
		AllowOrigins: cfg.AllowOrigins, ClientIPField: cfg.ClientIPField, ClientIP: clientip.New(cfg.TrustedNets)})
	hs := srv.HTTPServer()
	inner := hs.Handler
	hs.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/debug/pprof/profile":
			pprof.Profile(w, r)
		case strings.HasPrefix(r.URL.Path, "/debug/pprof/"):
			pprof.Index(w, r)
		default:
			inner.ServeHTTP(w, r)
		}
	})
	hs.Addr = "127.0.0.1:" + cfg.Port
	log.Fatal(hs.ListenAndServe())
}
GO
printf 'module dispatcherprof\n\ngo 1.26.0\n\nrequire event-dispatcher v0.0.0\n\nreplace event-dispatcher => %s\n' "$ROOT" >"$OUT/prof/go.mod"
cp "$ROOT/go.sum" "$OUT/prof/go.sum"
(cd "$OUT/prof" && GOFLAGS=-mod=mod go build -o "$OUT/dispatcher-pprof" .)

PROFILE_RATE=${PROFILE_RATE:-300}
load_args="-listeners $FANOUT_LISTENERS -publishers 32 -rate $PROFILE_RATE -duration 25s -json"
has_perf=0
command -v perf >/dev/null && perf record -o /dev/null -- true >/dev/null 2>&1 && has_perf=1

PORT=$PORT_BASE
PORT=$PORT LOG_LEVEL=warn "$OUT/dispatcher-pprof" >"$OUT/dispatcher-pprof.log" 2>&1 &
SERVER_PID=$!
sleep 1
# shellcheck disable=SC2086
"$OUT/loadtest" -url "http://127.0.0.1:$PORT" -server-pid "$SERVER_PID" $load_args >"$OUT/profile-dispatcher.json" &
load=$!
sleep 7 # listeners connected, publishing under way
curl -s -o "$OUT/dispatcher.cpu.pprof" "http://127.0.0.1:$PORT/debug/pprof/profile?seconds=15"
wait $load
stop_server
echo
echo "dispatcher under fan-out ($FANOUT_LISTENERS listeners, $PROFILE_RATE events/s), pprof:"
go tool pprof -top -nodecount 30 "$OUT/dispatcher-pprof" "$OUT/dispatcher.cpu.pprof" 2>/dev/null | sed -n '4,40p' || true
echo "cumulative, by function:"
go tool pprof -top -cum -nodecount 40 "$OUT/dispatcher-pprof" "$OUT/dispatcher.cpu.pprof" 2>/dev/null | sed -n '6,50p' || true

if [ $has_perf = 1 ]; then
	for server in dispatcher reference; do
		start_server "$server"
		# shellcheck disable=SC2086
		"$OUT/loadtest" -url "http://127.0.0.1:$PORT" -server-pid "$SERVER_PID" $load_args >"$OUT/profile-$server-perf.json" &
		load=$!
		sleep 7
		perf record -q -F 499 -g -p "$SERVER_PID" -o "$OUT/$server.perf.data" -- sleep 15 >/dev/null 2>&1 || true
		wait $load
		stop_server
		echo
		echo "$server under the same load, perf (self time by symbol):"
		perf report -i "$OUT/$server.perf.data" --no-children --sort symbol --stdio 2>/dev/null |
			grep -E '^ +[0-9]' | head -25 || true
	done
fi
