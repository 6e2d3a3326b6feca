package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/upstreamurl"
)

type state int32

const (
	stateConnecting state = iota
	stateConnected
	stateWaiting
	stateStopped
)

func (s state) String() string {
	return [...]string{"connecting", "connected", "waiting", "stopped"}[s]
}

// feed is one upstream. Its goroutine (run) owns the connection, the last
// event id and the backoff; the counters are atomics that Stats reads.
type feed struct {
	url    string // as configured: may hold credentials, never logged
	name   string // upstreamurl.Redact(url)
	opts   *Options
	types  map[string]bool
	door   *publish.Door
	client *http.Client
	log    zerolog.Logger

	lastID   string        // sent as Last-Event-ID; owned by run
	retry    time.Duration // the upstream's last retry: hint; 0 when none; owned by run
	dst      []byte        // reused for the compact form; owned by run
	one      [1][]byte     // the event being sent, as SendAll takes it; owned by run
	lastDrop time.Time     // when dropped events were last logged; owned by run

	state                           atomic.Int32
	events, invalid, tooLarge, busy atomic.Uint64
	skipped, reconnects             atomic.Uint64
	lastEvent                       atomic.Int64 // unix nanoseconds
	mu                              sync.Mutex
	lastErr                         string
}

func newFeed(i int, rawURL string, o *Options, types map[string]bool, door *publish.Door) *feed {
	f := &feed{url: rawURL, name: upstreamurl.Redact(rawURL), opts: o, types: types, door: door}
	f.log = o.Logger.With().Str("upstream", f.name).Int("upstream_index", i).Logger()
	f.client = &http.Client{Transport: o.Transport, CheckRedirect: f.checkRedirect}
	return f
}

// checkRedirect bounds redirects and keeps the configured headers (an API
// key) from any host but the one they were configured for, and from plain
// http when they were configured for https: a redirect from https://h/ to
// http://h/ keeps the host (both ports implicit) but would send them in
// clear.
func (f *feed) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= f.opts.MaxRedirects {
		return fmt.Errorf("stopped after %d redirects", len(via))
	}
	downgrade := via[0].URL.Scheme == "https" && req.URL.Scheme != "https"
	if req.URL.Host != via[0].URL.Host || downgrade {
		for name := range f.opts.Header {
			req.Header.Del(name)
		}
	}
	return nil
}

// outcome is how one connection ended.
type outcome struct {
	status     int           // the HTTP status; 0 when no response came
	retryAfter time.Duration // from a 429 or 503
	refused    bool          // an answer that will not change by itself: slow retry
	blocks     int           // events read on this connection, taken or not
	lasted     time.Duration // how long the stream was open
	err        error
}

func (f *feed) run(ctx context.Context) {
	defer f.state.Store(int32(stateStopped))
	failures := 0
	for {
		f.state.Store(int32(stateConnecting))
		out := f.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		f.setErr(out.err)
		wait := f.wait(out, &failures)
		ev := f.log.Warn()
		if out.refused {
			// It will not fix itself: someone must look.
			ev = f.log.Error()
		}
		ev.Err(out.err).Int("status", out.status).Int("events", out.blocks).
			Float64("retry_in_s", wait.Seconds()).Msg("upstream disconnected")
		f.state.Store(int32(stateWaiting))
		if !sleep(ctx, wait) {
			return
		}
		f.reconnects.Add(1)
	}
}

// wait is how long to wait before the next attempt. A connection that
// carried events resets the backoff and waits what the upstream's retry:
// asked; anything else doubles it. Never below MinRetry. The upstream's
// hints, retry: as Retry-After, are capped at MaxRetryAfter: a hostile or
// broken upstream cannot keep the relay away for hours.
func (f *feed) wait(out outcome, failures *int) time.Duration {
	o := f.opts
	hint := min(f.retry, o.MaxRetryAfter)
	var d time.Duration
	switch {
	case out.refused:
		*failures++
		d = max(o.ClientErrorDelay, f.backoff(*failures))
	case out.status == http.StatusOK && (out.blocks > 0 || out.lasted >= o.MaxBackoff):
		// It worked for a while: a fresh start, not one more failure.
		*failures = 0
		d = hint
	default:
		*failures++
		d = max(f.backoff(*failures), min(out.retryAfter, o.MaxRetryAfter), hint)
	}
	return max(d, o.MinRetry)
}

// backoff is Backoff doubled for each failure in a row, capped at
// MaxBackoff, with "equal jitter": between half and all of it, so that
// relays cut off together do not come back together.
func (f *feed) backoff(failures int) time.Duration {
	d := min(f.opts.Backoff<<min(failures-1, 30), f.opts.MaxBackoff)
	if d <= 0 { // overflow
		d = f.opts.MaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// connect opens the stream and reads it until it ends, ctx ends or the
// watchdog fires.
func (f *feed) connect(ctx context.Context) outcome {
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, f.url, nil)
	if err != nil {
		return outcome{err: err}
	}
	for name, values := range f.opts.Header {
		req.Header[name] = values
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	req.Header.Set("User-Agent", f.opts.UserAgent)
	if f.lastID != "" {
		req.Header.Set("Last-Event-ID", f.lastID)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return outcome{err: plain(err)}
	}
	defer resp.Body.Close()
	if out, ok := f.check(resp); !ok {
		return out
	}
	f.state.Store(int32(stateConnected))
	f.log.Info().Bool("resuming", f.lastID != "").Msg("upstream connected")
	errIdle := fmt.Errorf("no byte for %s (idle watchdog)", f.opts.IdleTimeout)
	dog := time.AfterFunc(f.opts.IdleTimeout, func() { cancel(errIdle) })
	defer dog.Stop()
	out := outcome{status: resp.StatusCode}
	opened := time.Now()
	p := newParser(watched{resp.Body, dog, f.opts.IdleTimeout}, f.opts.MaxEventBytes, f.lastID)
	for {
		b, err := p.next()
		if id, ok := p.takeID(); ok {
			f.lastID = id
		}
		if p.retry >= 0 {
			f.retry = time.Duration(min(p.retry, int64(time.Hour/time.Millisecond))) * time.Millisecond
		}
		if err != nil {
			if cause := context.Cause(cctx); cause == errIdle {
				err = cause
			} else if errors.Is(err, io.EOF) {
				err = errors.New("the upstream ended the stream")
			}
			out.err, out.lasted = plain(err), time.Since(opened)
			return out
		}
		out.blocks++
		f.deliver(ctx, b)
	}
}

// check sorts out an answer that is not a stream.
func (f *feed) check(resp *http.Response) (outcome, bool) {
	out := outcome{status: resp.StatusCode}
	switch code := resp.StatusCode; {
	case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
		out.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		out.err = fmt.Errorf("answered %s", resp.Status)
		return out, false
	case code >= 500 || code == http.StatusRequestTimeout:
		out.err = fmt.Errorf("answered %s", resp.Status)
		return out, false
	case code != http.StatusOK:
		out.refused, out.err = true, fmt.Errorf("answered %s; check UPSTREAM_URLS, UPSTREAM_HEADERS and UPSTREAM_USER_AGENT", resp.Status)
		return out, false
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/event-stream" {
		out.refused, out.err = true, fmt.Errorf("answered with Content-Type %q, not text/event-stream", resp.Header.Get("Content-Type"))
		return out, false
	}
	return out, true
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// deliver hands one event to the publish path. A saturated hub gets
// BusyWait to catch up, the upstream meanwhile held back by TCP; after
// that the event is dropped and counted.
func (f *feed) deliver(ctx context.Context, b block) {
	typ := "message"
	if len(b.typ) > 0 {
		typ = string(b.typ)
	}
	if len(f.types) > 0 && !f.types[typ] {
		f.skipped.Add(1)
		return
	}
	if b.tooLarge {
		f.tooLarge.Add(1)
		f.dropped("too_large", nil)
		return
	}
	data, err := f.door.Prepare(f.dst[:0], b.data, "", nil)
	f.dst = data
	if err != nil {
		f.invalid.Add(1)
		f.dropped("invalid", err)
		return
	}
	f.one[0] = data
	switch _, err := f.door.SendAll(ctx, f.one[:], f.opts.BusyWait); {
	case err == nil:
		f.events.Add(1)
		f.lastEvent.Store(time.Now().UnixNano())
	case errors.Is(err, publish.ErrBusy):
		f.busy.Add(1)
		f.dropped("busy", err)
	} // else closed: shutting down
}

// dropped logs a dropped event, at most once per DropLogInterval.
func (f *feed) dropped(reason string, err error) {
	now := time.Now()
	if now.Sub(f.lastDrop) < f.opts.DropLogInterval {
		return
	}
	f.lastDrop = now
	f.log.Warn().Str("reason", reason).AnErr("cause", err).Uint64("dropped_invalid", f.invalid.Load()).
		Uint64("dropped_too_large", f.tooLarge.Load()).Uint64("dropped_busy", f.busy.Load()).
		Msg("upstream events dropped (logged at most once per interval per upstream)")
}

func (f *feed) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastErr = ""
	if err != nil {
		f.lastErr = err.Error()
	}
}

func (f *feed) stats() Stats {
	inv, big, busy := f.invalid.Load(), f.tooLarge.Load(), f.busy.Load()
	s := Stats{
		URL: f.name, State: state(f.state.Load()).String(), Events: f.events.Load(),
		Dropped: inv + big + busy, DroppedInvalid: inv, DroppedTooLarge: big, DroppedBusy: busy,
		Skipped: f.skipped.Load(), Reconnects: f.reconnects.Load(),
	}
	if ns := f.lastEvent.Load(); ns != 0 {
		s.LastEvent = time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
	}
	f.mu.Lock()
	s.LastError = f.lastErr
	f.mu.Unlock()
	return s
}

// sleep waits for d, or until ctx ends: then it reports false.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// plain drops the URL that net/http puts in its errors: its query may hold
// a secret.
func plain(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// watched is the response body as the idle watchdog sees it: each read
// that brings bytes pushes the deadline back.
type watched struct {
	r    io.Reader
	dog  *time.Timer
	idle time.Duration
}

func (w watched) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if n > 0 {
		w.dog.Reset(w.idle)
	}
	return n, err
}
