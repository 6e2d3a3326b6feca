#!/usr/bin/env bash
# Measures the dispatcher over HTTP/1.1 and HTTP/2, one fresh server per
# protocol, load tool and server on this machine, in one run: the server's
# idle memory per listener (RSS with every listener connected, before any
# event, less RSS before them) and its CPU per delivery at a steady rate.
# Protocols: HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS (h2) and cleartext
# HTTP/2 (h2c); over HTTP/2 the listeners share connections, STREAMS_PER_CONN
# each, like a browser's EventSources.
#
# Needs: go, curl, jq, openssl.
#
# Environment:
#   LISTENERS        listeners per run (default 1000)
#   RATE             events/s published (default 100), for DURATION (default 10s)
#   STREAMS_PER_CONN listeners per HTTP/2 connection (default 100)
#   PROTOCOLS        default "http1 http1-tls h2-tls h2c"
#   OUT              binaries, certificate, logs and JSON reports (default: a new temp dir)
#   PORT             the dispatcher's port (default 29700)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LISTENERS=${LISTENERS:-1000}
RATE=${RATE:-100}
DURATION=${DURATION:-10s}
STREAMS_PER_CONN=${STREAMS_PER_CONN:-100}
PROTOCOLS=${PROTOCOLS:-http1 http1-tls h2-tls h2c}
OUT=${OUT:-$(mktemp -d -t dispatcher-bench-http2.XXXXXX)}
PORT=${PORT:-29700}

for tool in go curl jq openssl; do
	command -v "$tool" >/dev/null || { echo "bench-http2.sh: $tool is required" >&2; exit 1; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

echo "building into $OUT" >&2
(cd "$ROOT" && go build -o "$OUT/event_dispatcher" ./cmd/event_dispatcher && go build -o "$OUT/loadtest" ./cmd/loadtest)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
	-addext subjectAltName=IP:127.0.0.1 -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null

printf '%-10s %12s %14s %14s %12s %6s\n' protocol rss/listener cpu/delivery cpu/event delivered check
for proto in $PROTOCOLS; do
	scheme=http
	# Every listener comes from one address: its limit too (by default one
	# address leaves 1 % of the slots to others).
	env=(PORT="$PORT" ADMIN_PORT=off LOG_LEVEL=warn MAX_SUBSCRIBERS=$((LISTENERS + 100)) MAX_LISTENERS_PER_IP=$((LISTENERS + 100)))
	args=(-listeners "$LISTENERS" -publishers 4 -rate "$RATE" -duration "$DURATION" -settle 10s
		-connect-timeout 60s -progress 0 -json)
	case $proto in
	*-tls)
		scheme=https
		env+=(TLS_CERT_FILE="$OUT/cert.pem" TLS_KEY_FILE="$OUT/key.pem")
		args+=(-cacert "$OUT/cert.pem")
		;;
	esac
	case $proto in
	h2*) args+=(-http2 -streams-per-conn "$STREAMS_PER_CONN") ;;
	esac
	url="$scheme://127.0.0.1:$PORT"
	env "${env[@]}" "$OUT/event_dispatcher" >"$OUT/$proto.server.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		curl -fsS --cacert "$OUT/cert.pem" "$url/health" >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$OUT/loadtest" -url "$url" -server-pid "$pid" "${args[@]}" >"$OUT/$proto.json" 2>"$OUT/$proto.loadtest.log" || true
	kill -TERM "$pid"
	wait "$pid" || true
	jq -r --arg p "$proto" '[$p, (.server.rss_per_listener_bytes | tostring) + " B",
		((.result.server.cpu_us_per_delivery * 100 | round) / 100 | tostring) + " µs",
		((.result.server.cpu_us_per_event | round) | tostring) + " µs",
		(.result.deliveries.delivered | tostring), (.check.pass | tostring)] | @tsv' "$OUT/$proto.json" |
		awk -F'\t' '{ printf "%-10s %12s %14s %14s %12s %6s\n", $1, $2, $3, $4, $5, $6 }'
done
echo "reports in $OUT" >&2
