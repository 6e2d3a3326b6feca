#!/usr/bin/env bash
# Runs the load scenarios of BENCHMARKS.md against the dispatcher and, when
# its source is present, against the reference hub, one fresh server per
# run, load tool and server on this machine, and prints each figure side by
# side with the ratio dispatcher / reference.
#
# Needs: go, curl, jq. The reference hub (a directory with its main
# package: REFERENCE_HUB_DIR, default ../shared/bench/reference-hub next to
# this repository) is optional: without it only the dispatcher is measured.
#
# Environment:
#   SCENARIOS    which to run, default "ingest fanout idle slow storm disconnect"
#   SERVERS      default "dispatcher reference" ("dispatcher" without the reference)
#   BASELINE_REV a git revision of this repository (e.g. a release tag): its
#                dispatcher is built too and measured in the same run, as
#                "baseline", for before/after figures
#   OUT          where binaries, logs and JSON reports go (default: a new temp dir)
#   PORT_BASE    dispatcher on PORT_BASE, reference on PORT_BASE+1 (default 29690:
#                below the ephemeral range, which ten thousand client
#                connections may otherwise take it from)
#   FANOUT_LISTENERS, IDLE_LISTENERS  default 1000 and 10000
#   STORM_LISTENERS   listeners connecting at once in the storm (default 10000)
#   DISCONNECT_LISTENERS, SURVIVORS  listeners before the mass disconnect and
#                those that stay (default 10010 and 10)
#   STORM_RATE   events/s published during the storm and the disconnect (default 200)
#   RSS_AFTER    disconnect: server RSS samples after it, in increasing order
#                (default 10s,60s)
#   PROFILE=1    afterwards, profile both servers under fan-out at PROFILE_RATE
#                events/s (default 300) to FANOUT_LISTENERS: a pprof CPU profile
#                of the dispatcher (a wrapper binary built in OUT adds
#                net/http/pprof; the product is unchanged) and, when perf is
#                installed, perf profiles of both
#
# A load run that fails its check (loss, failed POSTs or listeners) still
# goes into the table: the "check" rows say which passed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REFERENCE_HUB_DIR=${REFERENCE_HUB_DIR:-$ROOT/../shared/bench/reference-hub}
SCENARIOS=${SCENARIOS:-ingest fanout idle slow storm disconnect}
if [ -z "${SERVERS:-}" ]; then
	SERVERS="dispatcher reference"
	if [ ! -d "$REFERENCE_HUB_DIR" ]; then
		echo "bench.sh: no reference hub at $REFERENCE_HUB_DIR: measuring the dispatcher alone" >&2
		SERVERS=dispatcher
	fi
fi
OUT=${OUT:-$(mktemp -d -t dispatcher-bench.XXXXXX)}
PORT_BASE=${PORT_BASE:-29690}
BASELINE_REV=${BASELINE_REV:-}
if [ -n "$BASELINE_REV" ]; then
	SERVERS="$SERVERS baseline"
fi
FANOUT_LISTENERS=${FANOUT_LISTENERS:-1000}
IDLE_LISTENERS=${IDLE_LISTENERS:-10000}
STORM_LISTENERS=${STORM_LISTENERS:-10000}
DISCONNECT_LISTENERS=${DISCONNECT_LISTENERS:-10010}
SURVIVORS=${SURVIVORS:-10}
STORM_RATE=${STORM_RATE:-200}
RSS_AFTER=${RSS_AFTER:-10s,60s}

has() { case " $SCENARIOS " in *" $1 "*) return 0 ;; esac; return 1; }
most=10
has fanout && [ "$FANOUT_LISTENERS" -gt "$most" ] && most=$FANOUT_LISTENERS
has idle && [ "$IDLE_LISTENERS" -gt "$most" ] && most=$IDLE_LISTENERS
has storm && [ "$STORM_LISTENERS" -gt "$most" ] && most=$STORM_LISTENERS
has disconnect && [ "$DISCONNECT_LISTENERS" -gt "$most" ] && most=$DISCONNECT_LISTENERS

# 10,000 listeners need 10,000 descriptors in the load tool and as many in
# the server (Go raises its own soft limit to the hard one, but the hard
# one must allow it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((most + 200)) ]; then
	echo "bench.sh: ulimit -n is $(ulimit -n), too low for $most listeners" >&2
	exit 1
fi
for tool in go curl jq; do
	command -v "$tool" >/dev/null || { echo "bench.sh: $tool is required" >&2; exit 1; }
done

mkdir -p "$OUT"
echo "building into $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/event_dispatcher" ./cmd/event_dispatcher)
(cd "$ROOT" && go build -o "$OUT/loadtest" ./cmd/loadtest)
case " $SERVERS " in
*" reference "*) (cd "$REFERENCE_HUB_DIR" && go build -o "$OUT/reference-hub" .) ;;
esac
if [ -n "$BASELINE_REV" ]; then
	rm -rf "$OUT/baseline-src" && mkdir -p "$OUT/baseline-src"
	git -C "$ROOT" archive "$BASELINE_REV" | tar -x -C "$OUT/baseline-src"
	(cd "$OUT/baseline-src" && go build -o "$OUT/event_dispatcher_baseline" ./cmd/event_dispatcher)
fi

SERVER_PID=
PORT=

# start_server NAME [MAX_LISTENERS]: a fresh server, its pid in SERVER_PID,
# its port in PORT. The dispatcher runs with its defaults but LOG_LEVEL=warn
# (the reference logs nothing per connection either), no admin listener (its
# fixed port may be taken on a shared machine), when more listeners than
# its default MAX_SUBSCRIBERS are coming, a limit above them, and, since the
# load tool connects every listener from one address, that limit for one
# address too (by default one address leaves 1 % of the slots to others).
start_server() {
	case $1 in
	dispatcher | baseline)
		PORT=$PORT_BASE
		local bin=$OUT/event_dispatcher most=10000
		if [ "$1" = baseline ]; then
			PORT=$((PORT_BASE + 2)) bin=$OUT/event_dispatcher_baseline
		fi
		if [ "${2:-0}" -gt 10000 ]; then
			most=$(($2 + 100))
		fi
		local limit=("MAX_SUBSCRIBERS=$most" "MAX_LISTENERS_PER_IP=$most")
		env PORT="$PORT" ADMIN_PORT=off LOG_LEVEL=warn "${limit[@]}" "$bin" >"$OUT/$1.log" 2>&1 &
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
	storm) echo "-scenario storm -listeners $STORM_LISTENERS -publishers 32 -rate $STORM_RATE -duration 30s -warmup 2s -settle 30s -connect-timeout 60s" ;;
	disconnect) echo "-scenario disconnect -listeners $DISCONNECT_LISTENERS -survivors $SURVIVORS -publishers 32 -rate $STORM_RATE -duration 12s -warmup 2s -settle 30s -connect-timeout 60s -rss-after $RSS_AFTER" ;;
	esac
}

# The listeners a scenario opens, for the server's limit.
scenario_listeners() {
	case $1 in
	storm) echo "$STORM_LISTENERS" ;;
	disconnect) echo "$DISCONNECT_LISTENERS" ;;
	idle) echo "$IDLE_LISTENERS" ;;
	*) echo 0 ;;
	esac
}

# The reference serves only the original paths and has no /health.
server_args() {
	case $1 in
	reference) echo "-ingest-path /metrics -stream-path /event-dispatcher -health-path=" ;;
	esac
}

for scenario in $SCENARIOS; do
	for server in $SERVERS; do
		start_server "$server" "$(scenario_listeners "$scenario")"
		echo "$scenario: $server (pid $SERVER_PID)" >&2
		status=0
		# shellcheck disable=SC2046
		"$OUT/loadtest" -url "http://127.0.0.1:$PORT" -server-pid "$SERVER_PID" -json \
			$(server_args "$server") $(scenario_args "$scenario") >"$OUT/$scenario-$server.json" || status=$?
		if [ "$status" -gt 1 ] || ! jq -e . "$OUT/$scenario-$server.json" >/dev/null 2>&1; then
			echo "bench.sh: the load tool could not run $scenario against $server (exit $status)" >&2
			exit 1
		fi
		stop_server
	done
done

# figure SCENARIO SERVER JQ: one number from a report, "-" when missing.
figure() {
	local f="$OUT/$1-$2.json"
	[ -s "$f" ] || { echo "-"; return; }
	jq -r "($3) // \"-\"" "$f" 2>/dev/null || echo "-"
}

ratio() { # ratio A B: "A/B" with an x, or "-" unless both are numbers
	jq -nr --arg d "$1" --arg r "$2" \
		'def num: test("^-?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?$");
		 if ($d|num) and ($r|num) and ($r|tonumber) != 0
		 then (($d|tonumber)/($r|tonumber)*100|round/100|tostring) + "x" else "-" end'
}

row() { # row LABEL SCENARIO JQ [better]
	local d r b
	d=$(figure "$2" dispatcher "$3")
	r=$(figure "$2" reference "$3")
	if [ -n "$BASELINE_REV" ]; then
		b=$(figure "$2" baseline "$3")
		printf '%-52s %14s %14s %8s %14s %8s  %s\n' "$1" "$d" "$r" "$(ratio "$d" "$r")" "$b" "$(ratio "$d" "$b")" "${4:-}"
		return
	fi
	printf '%-52s %14s %14s %8s  %s\n' "$1" "$d" "$r" "$(ratio "$d" "$r")" "${4:-}"
}

echo
echo "date $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(go version | cut -d' ' -f3), reports in $OUT"
if [ -n "$BASELINE_REV" ]; then
	printf '%-52s %14s %14s %8s %14s %8s  %s\n' "figure" "dispatcher" "reference" "ratio" "baseline" "ratio" "baseline: $BASELINE_REV"
else
	printf '%-52s %14s %14s %8s  %s\n' "figure" "dispatcher" "reference" "ratio" ""
fi
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
if has storm; then
	row "(e) storm $STORM_LISTENERS at $STORM_RATE/s: p50 ms to first byte" storm '.storm.time_to_first_byte.p50_ms*10|round/10' "lower is better"
	row "(e) storm: p99 ms to first byte" storm '.storm.time_to_first_byte.p99_ms*10|round/10' "lower is better"
	row "(e) storm: max ms to first byte" storm '.storm.time_to_first_byte.max_ms*10|round/10'
	row "(e) storm: listeners that failed to connect" storm '.storm.failed' "must be 0"
	row "(e) storm: server CPU s until the last first byte" storm '(.storm.cpu.server_s // null) | if . then .*100|round/100 else null end' "lower is better"
	row "(e) storm: load tool CPU s until the last first byte" storm '(.storm.cpu.tool_s // null) | if . then .*100|round/100 else null end'
	row "(e) storm: connection attempts dropped by a full accept queue" storm '.storm.cpu.listen_overflows // null'
	row "(e) storm: accepted POSTs/s" storm '.result.achieved_rate|round' "higher is better"
	row "(e) storm: rejected + failed POSTs" storm '.result.posts.rejected + .result.posts.transport_errors'
	row "(e) storm: p99 ms delivery latency" storm '.result.latency.p99_ms*10|round/10' "lower is better"
	row "(e) storm: loss % (owed after the first byte)" storm '.result.deliveries.loss_pct*1000|round/1000' "must be 0"
	row "(e) storm: /health polls not answered 200" storm '(.storm.health // null) | if . then .polls - (.by_status["200"] // 0) else null end'
	row "(e) storm: check passed" storm '.check.pass|tostring'
fi
if has disconnect; then
	# Windows by publish time: [1] is the first second after the disconnect;
	# "none" when no POST started in it (publishers waiting on the server).
	p99='.latency | if .count > 0 then .p99_ms*10|round/10 else "none" end'
	row "(f) disconnect $DISCONNECT_LISTENERS->$SURVIVORS: survivors p99 ms, +0-1 s" disconnect ".disconnect.windows[1] | $p99" "lower is better"
	row "(f) disconnect: survivors p99 ms, +1-2 s" disconnect ".disconnect.windows[2] | $p99" "lower is better"
	row "(f) disconnect: survivors p99 ms, +2-3 s" disconnect ".disconnect.windows[3] | $p99" "lower is better"
	row "(f) disconnect: survivors worst p99 ms after +2 s" disconnect \
		'[.disconnect.windows[3:][].latency | select(.count > 0) | .p99_ms] | if length > 0 then max*10|round/10 else "none" end' "lower is better"
	row "(f) disconnect: s until /health listeners = survivors" disconnect \
		'.disconnect | if .health == null then "-" elif .released_after_s == null then "never" else .released_after_s*100|round/100 end' "lower is better"
	row "(f) disconnect: survivors' loss %" disconnect '.result.deliveries.loss_pct*1000|round/1000' "must be 0"
	row "(f) disconnect: rejected + failed POSTs" disconnect '.result.posts.rejected + .result.posts.transport_errors'
	row "(f) disconnect: server RSS KB before listeners" disconnect '.server.rss_before_listeners_kb'
	row "(f) disconnect: server RSS KB with them" disconnect '.server.rss_listeners_connected_kb'
	i=0
	for after in ${RSS_AFTER//,/ }; do
		row "(f) disconnect: server RSS KB $after after it" disconnect "(.disconnect.rss // [])[$i].rss_kb"
		i=$((i + 1))
	done
	row "(f) disconnect: check passed" disconnect '.check.pass|tostring'
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
