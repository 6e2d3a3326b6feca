// Package upstream follows other servers' Server-Sent-Events streams (a
// public feed such as Wikimedia EventStreams, or another event-dispatcher)
// and hands every event whose data is one JSON object to the publish path,
// through its "upstream" door: validated, compacted, filtered and fanned
// out exactly like a POST.
//
// Each upstream has one goroutine that owns its connection and state. It
// sends the last event id back as Last-Event-ID on every reconnect, honours
// retry: (never below a floor, so "retry: 0" is no tight loop), backs off
// exponentially with jitter up to a cap, waits as long as Retry-After says
// on 429 and 503, retries slowly on other 4xx (they will not fix
// themselves) and abandons a connection on which no byte arrived for
// IdleTimeout. Memory per upstream is bounded: a line longer than the
// event limit is skipped as it streams by, never buffered.
package upstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/upstreamurl"
)

// Options configure a [Relay]. The zero value of every duration and limit
// means its default; tests shorten them.
type Options struct {
	URLs       []string    // http(s) SSE URLs, each followed by its own goroutine
	EventTypes []string    // SSE event types to take; empty takes all (no event: field is "message")
	Header     http.Header // extra request headers, e.g. an API key; never logged
	UserAgent  string      // default "event-dispatcher"
	Logger     zerolog.Logger

	MaxEventBytes    int           // largest data of one event (the data: lines joined); default 65536, as MAX_BODY_BYTES
	IdleTimeout      time.Duration // no byte for this long: the connection is abandoned; default 60s
	MinRetry         time.Duration // floor of every wait before a reconnect, retry: included; default 1s
	Backoff          time.Duration // first wait after a failure, doubled each time (with jitter); default 1s
	MaxBackoff       time.Duration // cap of the doubling; default 1m
	ClientErrorDelay time.Duration // wait after a 4xx other than 408/429, a 204 or a body that is not text/event-stream; default 5m
	MaxRetryAfter    time.Duration // cap of an upstream's Retry-After; default 10m
	ConnectTimeout   time.Duration // TCP connect and TLS handshake; default 10s
	HeaderTimeout    time.Duration // from the request sent to the response headers; default 30s
	MaxRedirects     int           // default 5
	BusyWait         time.Duration // how long an event waits for a saturated hub before it is dropped; default 1s
	DropLogInterval  time.Duration // dropped events are logged at most this often per upstream; default 1m
	Transport        http.RoundTripper
}

func (o *Options) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.IdleTimeout, time.Minute)
	def(&o.MinRetry, time.Second)
	def(&o.Backoff, time.Second)
	def(&o.MaxBackoff, time.Minute)
	def(&o.ClientErrorDelay, 5*time.Minute)
	def(&o.MaxRetryAfter, 10*time.Minute)
	def(&o.ConnectTimeout, 10*time.Second)
	def(&o.HeaderTimeout, 30*time.Second)
	def(&o.BusyWait, time.Second)
	def(&o.DropLogInterval, time.Minute)
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = 64 << 10
	}
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = 5
	}
	if o.UserAgent == "" {
		o.UserAgent = "event-dispatcher"
	}
	if o.Transport == nil {
		o.Transport = newTransport(o.ConnectTimeout, o.HeaderTimeout)
	}
}

// newTransport bounds every phase before the stream: connect, TLS, the
// response headers. The stream itself has no deadline: the idle watchdog
// guards it.
func newTransport(connect, headers time.Duration) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = connect
	t.ResponseHeaderTimeout = headers
	t.MaxResponseHeaderBytes = 64 << 10
	return t
}

// Relay follows every upstream from Start until Close.
type Relay struct {
	feeds  []*feed
	ctx    context.Context
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New checks the URLs and prepares one feed per upstream, each to hand its
// events to door; Start starts following them.
func New(opts Options, door *publish.Door) (*Relay, error) {
	opts.fill()
	var errs []error
	for _, u := range opts.URLs {
		if err := upstreamurl.Check(u); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	types := map[string]bool{}
	for _, t := range opts.EventTypes {
		types[t] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{ctx: ctx, cancel: cancel}
	for i, u := range opts.URLs {
		r.feeds = append(r.feeds, newFeed(i, u, &opts, types, door))
	}
	return r, nil
}

// Start starts one goroutine per upstream. Call it once.
func (r *Relay) Start() {
	for _, f := range r.feeds {
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			f.run(r.ctx)
		}()
	}
}

// Close closes every upstream connection and waits for the goroutines; a
// relay never started is only released.
// An event being handed over when Close is called is either delivered or
// refused by then: nothing reaches the door after Close returns.
func (r *Relay) Close() {
	r.cancel()
	r.done.Wait()
}

// Stats returns each upstream's figures, in the order of Options.URLs.
func (r *Relay) Stats() []Stats {
	out := make([]Stats, len(r.feeds))
	for i, f := range r.feeds {
		out[i] = f.stats()
	}
	return out
}

// Stats are one upstream's figures since start.
type Stats struct {
	URL             string `json:"url"`   // without credentials (see upstreamurl.Redact)
	State           string `json:"state"` // connecting, connected, waiting (before a reconnect) or stopped
	Events          uint64 `json:"events"`
	Dropped         uint64 `json:"dropped"`           // the three below
	DroppedInvalid  uint64 `json:"dropped_invalid"`   // not one JSON object, or not strict JSON
	DroppedTooLarge uint64 `json:"dropped_too_large"` // data beyond MAX_BODY_BYTES
	DroppedBusy     uint64 `json:"dropped_busy"`      // the fan-out stayed saturated
	Skipped         uint64 `json:"skipped"`           // event types not in UPSTREAM_EVENT_TYPES
	LastEvent       string `json:"last_event"`        // RFC 3339, empty before the first
	Reconnects      uint64 `json:"reconnects"`
	LastError       string `json:"last_error,omitempty"` // why the last connection ended or failed
}

// Connected reports whether the upstream's stream is open.
func (s Stats) Connected() bool { return s.State == stateConnected.String() }
