// Package server is the HTTP face of the dispatcher: ingest, stream, health,
// CORS, and the http.Server settings that keep slow or hostile clients from
// holding resources.
package server

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/broker"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/kinesis"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/upstream"
)

// Options are the Server's dependencies and settings.
type Options struct {
	Hub             *broadcast.Hub
	Logger          zerolog.Logger
	MaxBodyBytes    int64
	BodyReadTimeout time.Duration
	AllowOrigins    []string // nil allows any origin
	ClientIPField   string   // empty: events are passed through unchanged
	ClientIP        *clientip.Resolver
	Access          access.Policy // listener tokens, per-IP limits, IP anonymisation; zero: open
	// WriteTimeout bounds the writing of every answer but streams, which
	// have their own per-write deadline. Zero means 10 s.
	WriteTimeout time.Duration
	// LenientJSON accepts any JSON object; by default events must be
	// I-JSON (see event.Compact).
	LenientJSON bool
	Broker      Broker // nil: this replica alone
	// Publish is the path every way in ends in (pkg/publish). Nil: one is
	// made from Hub, LenientJSON, ClientIPField, with Broker as its sink.
	Publish *publish.Path

	// Certificate is the public port's TLS certificate (TLS_CERT_FILE),
	// for its metrics; nil: plain HTTP.
	Certificate Certificate
	// Conns counts the public port's connections (MAX_CONNECTIONS); nil:
	// not capped, no connection metrics.
	Conns ConnCounter
	// Upstreams reports the upstream SSE feeds relayed into Publish
	// (pkg/upstream), for /health and the metrics; nil: none.
	Upstreams func() []upstream.Stats
	// Kinesis is the sink forwarding events to Kinesis (pkg/kinesis), for
	// /health and the metrics only: the publish path feeds it. Nil: off.
	Kinesis KinesisSink
}

// KinesisSink reports how forwarding to Kinesis goes: a *kinesis.Sink.
type KinesisSink interface {
	Stats() kinesis.Stats
}

// ConnCounter is what the metrics read of a [connlimit.Listener].
type ConnCounter interface{ Stats() connlimit.Stats }

// Broker links this replica to the others (pkg/broker): each event accepted
// here goes to the local hub and to the broker (a sink of the publish
// path); what other replicas accept reaches the hub through the broker's
// own handler.
type Broker interface {
	Publish(data []byte) // never blocks; copies data
	Stats() broker.Stats
}

// Server routes requests to the hub. It is an http.Handler.
type Server struct {
	opts           Options
	handler        http.Handler
	started        time.Time
	draining       atomic.Bool
	inflight       atomic.Int64               // POSTs being handled, so shutdown can let them finish
	rejected       [numReasons]atomic.Uint64  // POSTs refused, by reason
	streamsRefused [numRefusals]atomic.Uint64 // streams refused before they started, by reason
	refused        refusedOrigins
	refusedAuth    logLimit  // listeners refused with 401, logged by reason and client
	bodies         sync.Pool // *bytes.Buffer for request bodies
	metrics        *metrics
	admin          http.Handler
	post           *publish.Door // the players' POST
}

// New returns a Server with every route in place.
func New(opts Options) *Server {
	if opts.ClientIP == nil {
		opts.ClientIP = clientip.New(nil) // the TCP peer
	}
	if opts.Upstreams == nil {
		opts.Upstreams = func() []upstream.Stats { return nil }
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Publish == nil {
		var sinks []publish.Sink
		if opts.Broker != nil {
			sinks = append(sinks, publish.SinkFunc(opts.Broker.Publish))
		}
		opts.Publish = publish.New(publish.Options{Hub: opts.Hub, Sinks: sinks, Lenient: opts.LenientJSON, ClientIPField: opts.ClientIPField})
	}
	s := &Server{opts: opts, started: time.Now(), post: opts.Publish.Door("post")}
	s.metrics = newMetrics(s)
	admin := http.NewServeMux()
	s.addAdminRoutes(admin)
	s.admin = readAdminBody(admin)
	mux := http.NewServeMux()
	s.addRoutes(mux)
	var h http.Handler = mux
	if opts.Logger.GetLevel() <= zerolog.DebugLevel {
		h = accessLog(opts.Logger, h) // debug only: the ingest path stays cheap
	}
	s.handler = s.guardConn(s.cors(h))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// HTTPServer returns an http.Server for s with timeouts that bound what a
// client can hold. There is no WriteTimeout: it would cut every stream; each
// stream has its own write deadline instead, every other answer one set by
// guardConn, and POST bodies have their own read deadline.
//
// It speaks HTTP/1.1 and HTTP/2: over TLS (a listener from tls.NewListener
// whose config offers "h2" by ALPN) and in cleartext with prior knowledge
// (h2c), for proxies and internal clients. HTTP/2 carries many streams on
// one connection, so a browser is no longer held to 6 streams per origin.
func (s *Server) HTTPServer() *http.Server {
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          newStdLogger(s.opts.Logger),
		Protocols:         &protocols,
		HTTP2:             s.http2Config(),
	}
}

// maxHeaderBytes bounds a request's headers. Over HTTP/2 it is also the
// SETTINGS_MAX_HEADER_LIST_SIZE net/http announces (plus some slack), counted
// on the decoded headers, so an HPACK bomb (a few bytes expanding to
// megabytes) is refused like an oversized header.
const maxHeaderBytes = 16 << 10

// MaxConcurrentStreams is how many streams one HTTP/2 connection may have
// open: each browser gets this many EventSources on one connection (over
// HTTP/1.1, six per origin). Requests beyond it wait in the client.
const MaxConcurrentStreams = 250

// http2Config sets the HTTP/2 limits against abuse. What net/http already
// does, and what is set here:
//
//   - Rapid reset (CVE-2023-44487) and the resets a client provokes on
//     purpose (CVE-2025-8671): net/http runs at most MaxConcurrentStreams
//     handlers per connection whatever happened to their streams, queues
//     at most 4 times as many, and beyond that ends the connection with
//     ENHANCE_YOUR_CALM.
//   - Control-frame floods (PING, SETTINGS, RST_STREAM answers the client
//     does not read): at most 10000 queued, then the connection is closed;
//     CONTINUATION floods: header bytes are counted across frames.
//   - Header size: maxHeaderBytes, on the decoded list; the HPACK decoder's
//     table is net/http's 4 KiB.
//   - WriteByteTimeout: a connection whose socket takes no byte for
//     WriteTimeout is closed, with every stream on it. One stream that stops
//     reading is reset by its own write deadline (HTTP/2 flow control keeps
//     the others moving); a client that reads nothing at all blocks the
//     connection's single writer, and with it every stream's RST_STREAM.
func (s *Server) http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:      MaxConcurrentStreams,
		MaxDecoderHeaderTableSize: 4 << 10,
		WriteByteTimeout:          s.opts.WriteTimeout,
	}
}

// Admin returns the operators' handler: metrics, probes and profiles. It
// belongs on its own port, never exposed publicly.
func (s *Server) Admin() http.Handler { return s.admin }

// Drain makes /health and /readyz answer 503 "draining" from now on.
func (s *Server) Drain() { s.draining.Store(true) }

// WaitIngest waits until no POST is being handled, or ctx ends.
func (s *Server) WaitIngest(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for s.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
