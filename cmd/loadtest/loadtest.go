package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is one load test, as given on the command line.
type config struct {
	URLs           []*url.URL // base URL of each replica
	PublishURL     *url.URL   // when set, every publisher POSTs here instead (a relay chain: listeners on URLs follow it)
	IngestPath     string
	StreamPath     string
	HealthPath     string // "" = do not poll
	Scenario       string
	Listeners      int
	Publishers     int
	Stall          int
	StallRcvBuf    int     // receive buffer of the stalled connections; 0 = kernel default
	Rate           float64 // events/s over all publishers; 0 = as fast as possible
	Duration       time.Duration
	Events         uint64 // 0 = no cap but the memory bound
	Fixture        string
	Raw            bool
	Settle         time.Duration
	PostTimeout    time.Duration
	ConnectTimeout time.Duration
	ServerPIDs     []int
	MaxLoss        float64       // percent
	MinRate        float64       // percent of Rate that must be achieved
	Progress       time.Duration // progress line period off a terminal; 0 = none
	CPUProfile     string        // the tool's own profile

	Warmup    time.Duration   // storm, disconnect: publishing before the event
	Ramp      time.Duration   // storm: spread of the connection starts
	Survivors int             // disconnect
	Window    time.Duration   // disconnect: latency window width
	RSSAfter  []time.Duration // disconnect: extra RSS samples after it

	FindMax   bool
	StartRate float64
	Factor    float64
	Step      time.Duration
	MaxSteps  int
	Refine    int // steps between the best passing and the first failing rate

	HTTP2          bool   // listeners and publishers speak HTTP/2 (h2 over TLS, h2c otherwise)
	StreamsPerConn int    // -http2: listeners per connection
	CACert         string // PEM file of extra trusted roots
}

// Bounds that keep a run finite whatever the flags say.
const (
	maxDuration = 10 * time.Minute
	// bitBudget caps the per-listener delivery bitsets of one phase
	// (listeners x events bits, 256 MiB), which caps the events of a phase.
	bitBudget = 1 << 31
	// connectParallel is how many streams are being opened at once, but in
	// a storm.
	connectParallel = 64
)

// endpoint joins the base URL and a path.
func endpoint(base *url.URL, path string) *url.URL {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(path, "/")
	u.RawPath = ""
	return &u
}

// target is one replica's endpoints.
type target struct {
	base   string
	ingest string
	stream *url.URL
	health string // "" = none
}

// phase is one stretch of publishing at one rate, with its own sequence
// numbers [base, base+limit) and its own accounting.
type phase struct {
	base, limit uint64
	rate        float64
	start       time.Time
	deadline    time.Time
	next        atomic.Uint64 // next sequence number to take, relative to base
	accepted    syncSeqSet
	hists       []*shardedHistogram // by replica
	windows     *windows            // disconnect: the survivors' latency by publish time
	leaving     *shardedHistogram   // disconnect: the latency of the listeners that leave
	survivors   int                 // listeners with a smaller id are survivors
	publishers  int
}

// watermark is the first sequence number (relative) that no publisher has
// taken yet: every event from it on is sent after this call.
func (ph *phase) watermark() uint64 { return min(ph.next.Load(), ph.limit) }

// tester holds the connections of one run.
type tester struct {
	cfg       config
	targets   []target
	inj       injector
	bodyBytes int
	client    *http.Client
	stalled   []*stalledConn
	nextBase  uint64
	progress  *progress // nil for none
	bufSize   int       // per listener read buffer
	tls       *tls.Config
	h2        *h2Conns // with -http2: the connections listeners share

	mu        sync.Mutex
	listeners []*listener // guarded by mu: a storm adds to it while others read
}

// run performs the whole test and returns its report. It stops early,
// still reporting, when ctx ends; the error is for setup failures only.
func run(ctx context.Context, cfg config, prog *progress) (*report, error) {
	fixture, err := loadFixture(cfg.Fixture, cfg.Raw)
	if err != nil {
		return nil, err
	}
	inj, err := newInjector(fixture)
	if err != nil {
		return nil, err
	}
	tc, err := loadRoots(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("-cacert: %w", err)
	}
	t := &tester{
		cfg:       cfg,
		inj:       inj,
		bodyBytes: len(inj.appendBody(nil, 1e6, 1, time.Now().UnixNano())),
		client:    newPostClient(cfg, tc),
		progress:  prog,
		tls:       tc,
		bufSize:   32 << 10,
	}
	if cfg.Listeners > 2000 {
		t.bufSize = 4 << 10 // ten thousand idle listeners need little
	}
	for _, u := range cfg.URLs {
		tg := target{base: u.String(), ingest: endpoint(u, cfg.IngestPath).String(), stream: endpoint(u, cfg.StreamPath)}
		if cfg.HealthPath != "" {
			tg.health = endpoint(u, cfg.HealthPath).String()
		}
		if cfg.PublishURL != nil {
			tg.ingest = endpoint(cfg.PublishURL, cfg.IngestPath).String()
		}
		t.targets = append(t.targets, tg)
	}
	defer t.client.CloseIdleConnections()
	if cfg.HTTP2 {
		t.h2 = newH2Conns(cfg.StreamsPerConn, tc)
		defer t.h2.close()
	}
	rep := newReport(cfg, t.bodyBytes)

	var base procSample
	if len(cfg.ServerPIDs) > 0 {
		if base, err = readProcs(cfg.ServerPIDs); err != nil {
			return nil, fmt.Errorf("-server-pid: %w", err)
		}
		rep.Server = &serverReport{PIDs: cfg.ServerPIDs, RSSBeforeKB: base.RSSKB}
	}
	defer t.closeAll()
	upfront := cfg.Listeners
	if cfg.Scenario == scenarioStorm {
		upfront = 0 // they connect during the run
	}
	rep.Connect = t.connect(ctx, upfront)
	if rep.Server != nil {
		if s, err := readProcs(cfg.ServerPIDs); err == nil {
			rep.Server.RSSConnectedKB = s.RSSKB
			if n := len(t.listeners) + len(t.stalled); n > 0 {
				rep.Server.RSSPerListenerBytes = (s.RSSKB - base.RSSKB) * 1024 / int64(n)
			}
		}
	}

	switch {
	case upfront > 0 && len(t.listeners) == 0:
		rep.Skipped = "no listener could connect: nothing published"
	case cfg.FindMax:
		rep.FindMax = t.findMax(ctx)
	case cfg.Scenario == scenarioStorm:
		rep.Storm = &stormReport{}
		p := t.runPhase(ctx, cfg.Rate, cfg.Duration, func(ph *phase) { t.storm(ctx, ph, rep.Storm) })
		rep.Result = &p
	case cfg.Scenario == scenarioDisconnect:
		rep.Disconnect = &disconnectReport{}
		p := t.runPhase(ctx, cfg.Rate, cfg.Duration, func(ph *phase) { t.disconnect(ctx, ph, rep.Disconnect) })
		rep.Result = &p
		rep.Disconnect.finish()
	default:
		p := t.runPhase(ctx, cfg.Rate, cfg.Duration, nil)
		rep.Result = &p
	}
	rep.Interrupted = ctx.Err() != nil

	if len(t.stalled) > 0 {
		rep.Stalled = &stalledReport{Opened: len(t.stalled)}
		var wg sync.WaitGroup
		var dropped atomic.Int64
		for _, s := range t.stalled {
			wg.Go(func() {
				if s.dropped(2 * time.Second) {
					dropped.Add(1)
				}
			})
		}
		wg.Wait()
		rep.Stalled.DroppedByServer = int(dropped.Load())
	}
	if rep.Server != nil {
		if s, err := readProcs(cfg.ServerPIDs); err == nil {
			rep.Server.RSSAfterKB = s.RSSKB
		}
	}
	rep.check(cfg.MaxLoss, cfg.MinRate)
	return rep, nil
}

// connect opens n listeners and the stalled connections, a bounded number
// at a time.
func (t *tester) connect(ctx context.Context, n int) connectReport {
	start := time.Now()
	rep := connectReport{FailedBy: map[string]int{}}
	var mu sync.Mutex
	sem := make(chan struct{}, connectParallel)
	var wg sync.WaitGroup
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() { // ten thousand listeners may take a while
		defer close(stopped)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if t.progress.due() {
				mu.Lock()
				failed := 0
				for _, c := range rep.FailedBy {
					failed += c
				}
				mu.Unlock()
				t.progress.printf("%5.0fs  connecting: %d of %d listeners, %d failed",
					time.Since(start).Seconds(), len(t.listenerList()), n, failed)
			}
		}
	}()
	for i := range n + t.cfg.Stall {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var l *listener
			var s *stalledConn
			var err error
			if i < n {
				l, err = t.openListener(ctx, i, i%len(t.targets))
			} else {
				tg := t.targets[i%len(t.targets)]
				s, err = openStalled(ctx, tg.stream, t.tls, t.cfg.StallRcvBuf, t.cfg.ConnectTimeout)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				rep.FailedBy[errKind(err)]++
			case l != nil:
				t.addListener(l)
				go l.run()
			default:
				t.stalled = append(t.stalled, s)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-stopped
	t.progress.clear()
	rep.Connected = len(t.listenerList())
	for _, n := range rep.FailedBy {
		rep.Failed += n
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep
}

func (t *tester) addListener(l *listener) {
	t.mu.Lock()
	t.listeners = append(t.listeners, l)
	t.mu.Unlock()
}

// listenerList returns the listeners so far; the slice is not modified
// afterwards (appends may reallocate, never overwrite).
func (t *tester) listenerList() []*listener {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.listeners[:len(t.listeners):len(t.listeners)]
}

func (t *tester) closeAll() {
	for _, l := range t.listenerList() {
		l.close()
	}
	for _, s := range t.stalled {
		s.close()
	}
}

// runPhase publishes at rate for d, runs during (when not nil) alongside,
// waits for it and then up to the settle time for the deliveries, and
// accounts for everything.
func (t *tester) runPhase(ctx context.Context, rate float64, d time.Duration, during func(*phase)) phaseReport {
	expected := t.cfg.Listeners
	limit := uint64(bitBudget / max(expected, len(t.listenerList()), 1))
	if t.cfg.Events > 0 {
		limit = min(limit, t.cfg.Events)
	}
	ph := &phase{base: t.nextBase, limit: limit, rate: rate, survivors: t.cfg.Survivors, publishers: t.cfg.Publishers}
	for range t.targets {
		ph.hists = append(ph.hists, newShardedHistogram(4*runtime.GOMAXPROCS(0)))
	}
	var before procSample
	if len(t.cfg.ServerPIDs) > 0 {
		before, _ = readProcs(t.cfg.ServerPIDs)
	}
	ph.start = time.Now()
	ph.deadline = ph.start.Add(d)
	if t.cfg.Scenario == scenarioDisconnect {
		ph.windows = newWindows(ph.start.Add(t.cfg.Warmup), t.cfg.Window, ph.deadline)
		ph.leaving = newShardedHistogram(4 * runtime.GOMAXPROCS(0))
	}
	for _, l := range t.listenerList() {
		l.startPhase(ph, 0)
	}

	stats := make([]pubStats, t.cfg.Publishers)
	var pubEnd time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		if during != nil {
			wg.Go(func() { during(ph) })
		}
		var pubs sync.WaitGroup
		for i := range stats {
			tg := t.targets[i%len(t.targets)]
			pubs.Go(func() { stats[i] = publish(ctx, ph, i, t.client, tg.ingest, t.inj) })
		}
		pubs.Wait()
		pubEnd = time.Now()
		wg.Wait()
	}()
	peakRSS := t.watch(ph, done, before.RSSKB)
	t.settle(ctx, ph)
	t.nextBase = ph.base + min(ph.next.Load(), ph.limit)

	// The rate is over the publishing window; POSTs still in flight at its
	// end complete after it.
	rep := phaseReport{TargetRate: rate, PublishSeconds: min(pubEnd.Sub(ph.start), d).Seconds()}
	rep.Posts = mergePosts(stats, 0, 1)
	if rep.PublishSeconds > 0 {
		rep.AchievedRate = float64(rep.Posts.Accepted) / rep.PublishSeconds
	}
	rep.account(t.listenerList(), ph, t.targets, stats)
	if len(t.cfg.ServerPIDs) > 0 {
		if after, err := readProcs(t.cfg.ServerPIDs); err == nil {
			rep.Server = newPhaseServer(before, after, max(peakRSS, after.RSSKB), time.Since(ph.start), rep.Posts.Accepted, rep.Deliveries.Delivered)
		}
	}
	return rep
}

// watch waits until done, sampling the server's memory every second and
// printing the progress line. It returns the peak RSS seen.
func (t *tester) watch(ph *phase, done <-chan struct{}, peak int64) int64 {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastAcc uint64
	for {
		select {
		case <-done:
			t.progress.clear()
			return peak
		case <-tick.C:
		}
		if len(t.cfg.ServerPIDs) > 0 {
			if s, err := readProcs(t.cfg.ServerPIDs); err == nil {
				peak = max(peak, s.RSSKB)
			}
		}
		if t.progress.due() {
			acc := ph.accepted.count()
			ls := t.listenerList()
			got, want, lost := deliveredShare(ph, ls)
			pct := 100.0
			if want > 0 {
				pct = 100 * float64(got) / float64(want)
			}
			t.progress.printf("%5.0fs  sent %d  accepted %d  %d/s  delivered %.2f%%  listeners %d, %d lost",
				time.Since(ph.start).Seconds(), ph.next.Load(), acc, acc-lastAcc, pct, len(ls), lost)
		}
		lastAcc = ph.accepted.count()
	}
}

// deliveredShare is the progress line's figures: of the listeners not
// departed, the owed events received so far, the events accepted from
// each one's start on, and how many were lost. Counting the events
// accepted since each one joined instead would include the POSTs in
// flight when a storm listener joined, never owed to it.
func deliveredShare(ph *phase, ls []*listener) (got, want uint64, lost int) {
	owed := newSuffixCounter(ph.accepted.snapshot())
	for _, l := range ls {
		if l.departed.Load() {
			continue
		}
		g, from := l.progress()
		w := owed.from(from)
		got += min(g, w)
		want += w
		if l.lost.Load() {
			lost++
		}
	}
	return got, want, lost
}

// settle waits until every listener still connected has every event it is
// owed, or the settle time has passed, or ctx ended.
func (t *tester) settle(ctx context.Context, ph *phase) {
	deadline := time.Now().Add(t.cfg.Settle)
	owed := newSuffixCounter(ph.accepted.words())
	for time.Now().Before(deadline) && ctx.Err() == nil {
		complete := true
		for _, l := range t.listenerList() {
			if l.lost.Load() || l.departed.Load() {
				continue
			}
			l.mu.Lock()
			a := l.acct
			behind := a != nil && a.unique < owed.from(a.from)
			l.mu.Unlock()
			if behind {
				complete = false
				break
			}
		}
		if complete {
			return
		}
		sleepUntil(ctx, time.Now().Add(20*time.Millisecond))
	}
}

// findMax raises the rate step by step until a step fails, then tries
// rates between the best passing one and the first failing one (geometric
// midpoints) to narrow the answer, and reports the highest rate that passed.
func (t *tester) findMax(ctx context.Context) *findMaxReport {
	rep := &findMaxReport{StartRate: t.cfg.StartRate, Factor: t.cfg.Factor, StepSeconds: t.cfg.Step.Seconds()}
	start := time.Now()
	rate, failed := t.cfg.StartRate, 0.0
	refines := 0
	for step := 0; ; step++ {
		switch {
		case ctx.Err() != nil:
			rep.StopReason = cmpString(rep.StopReason, "interrupted")
			return rep
		case step >= t.cfg.MaxSteps:
			rep.StopReason = cmpString(rep.StopReason, "maximum number of steps reached")
			return rep
		case time.Since(start)+t.cfg.Step+t.cfg.Settle > maxDuration:
			rep.StopReason = cmpString(rep.StopReason, "time limit "+maxDuration.String()+" reached")
			return rep
		}
		p := t.runPhase(ctx, rate, t.cfg.Step, nil)
		if ctx.Err() != nil {
			rep.StopReason = cmpString(rep.StopReason, "interrupted")
			return rep
		}
		p.FailReason = p.verdict()
		rep.Steps = append(rep.Steps, p)
		t.progress.line("step %2d  %8.0f/s  %s", step+1, rate, cmpString(p.FailReason, "pass"))
		if p.FailReason == "" {
			if rate > rep.MaxRate {
				rep.MaxRate, rep.MaxAchievedRate, rep.Best = rate, p.AchievedRate, len(rep.Steps)-1
			}
		} else {
			if failed == 0 {
				rep.StopReason = fmt.Sprintf("%.0f/s failed: %s", rate, p.FailReason)
			}
			failed = rate
		}
		switch {
		case failed == 0:
			rate *= t.cfg.Factor
			continue
		case refines >= t.cfg.Refine || rep.MaxRate == 0:
			return rep
		case t.lostListeners() > 0:
			// Later steps would measure fewer listeners than asked for.
			rep.StopReason += "; not refined: listeners were lost"
			return rep
		}
		refines++
		// A failing step may leave a backlog: let it drain before the next.
		sleepUntil(ctx, time.Now().Add(t.cfg.Settle))
		rate = math.Round(math.Sqrt(rep.MaxRate * failed))
		if rate <= rep.MaxRate || rate >= failed {
			return rep
		}
	}
}

func (t *tester) lostListeners() int {
	n := 0
	for _, l := range t.listenerList() {
		if l.lost.Load() {
			n++
		}
	}
	return n
}

func cmpString(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// verdict is why a find-max step failed, or "" when it passed.
func (p *phaseReport) verdict() string {
	var why []string
	if p.Deliveries.LossPct > 0.1 {
		why = append(why, fmt.Sprintf("loss %.3f%% > 0.1%%", p.Deliveries.LossPct))
	}
	if p.Latency.P99MS > 1000 {
		why = append(why, fmt.Sprintf("p99 %.0f ms > 1 s", p.Latency.P99MS))
	}
	if n := p.Deliveries.Duplicates + p.Deliveries.OutOfOrder; n > 0 {
		why = append(why, strconv.FormatUint(n, 10)+" duplicate or out-of-order deliveries")
	}
	if p.Posts.Rejected > 0 {
		why = append(why, strconv.FormatUint(p.Posts.Rejected, 10)+" POSTs rejected")
	}
	if p.Posts.TransportErrors > 0 {
		why = append(why, strconv.FormatUint(p.Posts.TransportErrors, 10)+" POST transport errors")
	}
	if p.Listeners.Lost > 0 {
		why = append(why, strconv.Itoa(p.Listeners.Lost)+" listeners disconnected")
	}
	if p.TargetRate > 0 && p.AchievedRate < 0.9*p.TargetRate {
		why = append(why, fmt.Sprintf("achieved only %.0f/s", p.AchievedRate))
	}
	return strings.Join(why, "; ")
}

// progress prints the live progress line: rewritten in place every second
// on a terminal, one line every few seconds elsewhere. Its methods do
// nothing on a nil progress.
type progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time
}

// due reports whether a line is to be printed now.
func (p *progress) due() bool {
	if p == nil {
		return false
	}
	if p.tty {
		return true
	}
	// A tick early is due: the caller ticks every second.
	return p.every > 0 && time.Since(p.last) >= p.every-100*time.Millisecond
}

func (p *progress) printf(format string, args ...any) {
	if p == nil {
		return
	}
	p.last = time.Now()
	if p.tty {
		fmt.Fprintf(p.w, "\r"+format+"   ", args...)
		return
	}
	fmt.Fprintf(p.w, "progress  "+format+"\n", args...)
}

// line prints a line that stays, on a terminal too.
func (p *progress) line(format string, args ...any) {
	if p == nil {
		return
	}
	p.clear()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *progress) clear() {
	if p != nil && p.tty {
		fmt.Fprint(p.w, "\r"+strings.Repeat(" ", 100)+"\r")
	}
}

// openListener connects listener i to replica: over its own HTTP/1.1
// connection, or with -http2 as a stream of a shared HTTP/2 connection.
func (t *tester) openListener(ctx context.Context, i, replica int) (*listener, error) {
	tg := t.targets[replica]
	if t.h2 != nil {
		client := t.h2.client(i, len(t.targets), replica, tg.stream.Scheme)
		return connectH2Listener(ctx, i, replica, client, tg.stream, t.bufSize, t.cfg.ConnectTimeout)
	}
	return connectListener(ctx, i, replica, tg.stream, t.tls, t.bufSize, t.cfg.ConnectTimeout)
}
