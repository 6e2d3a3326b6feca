package main

import (
	"context"
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
	URL            *url.URL // base URL of the dispatcher
	IngestPath     string
	StreamPath     string
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
	ServerPID      int
	CPUProfile     string // the tool's own profile

	FindMax   bool
	StartRate float64
	Factor    float64
	Step      time.Duration
	MaxSteps  int
	Refine    int // steps between the best passing and the first failing rate
}

// Bounds that keep a run finite whatever the flags say.
const (
	maxDuration = 10 * time.Minute
	// bitBudget caps the per-listener delivery bitsets of one phase
	// (listeners x events bits, 256 MiB), which caps the events of a phase.
	bitBudget = 1 << 31
	// connectParallel is how many streams are being opened at once.
	connectParallel = 64
)

// endpoint joins the base URL and a path.
func endpoint(base *url.URL, path string) *url.URL {
	u := *base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.TrimPrefix(path, "/")
	u.RawPath = ""
	return &u
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
	hist        *shardedHistogram
}

// tester holds the connections of one run.
type tester struct {
	cfg       config
	ingest    string
	stream    *url.URL
	inj       injector
	bodyBytes int
	client    *http.Client
	listeners []*listener
	stalled   []*stalledConn
	nextBase  uint64
	progress  io.Writer // live progress line; nil for none
}

// run performs the whole test and returns its report. It stops early,
// still reporting, when ctx ends; the error is for setup failures only.
func run(ctx context.Context, cfg config, progress io.Writer) (*report, error) {
	fixture, err := loadFixture(cfg.Fixture, cfg.Raw)
	if err != nil {
		return nil, err
	}
	inj, err := newInjector(fixture)
	if err != nil {
		return nil, err
	}
	t := &tester{
		cfg:       cfg,
		ingest:    endpoint(cfg.URL, cfg.IngestPath).String(),
		stream:    endpoint(cfg.URL, cfg.StreamPath),
		inj:       inj,
		bodyBytes: len(inj.appendBody(nil, 1e6, 1, time.Now().UnixNano())),
		client:    newPostClient(cfg.Publishers, cfg.PostTimeout),
		progress:  progress,
	}
	defer t.client.CloseIdleConnections()
	rep := &report{
		URL: cfg.URL.String(), IngestPath: cfg.IngestPath, StreamPath: cfg.StreamPath,
		Fixture: cfg.Fixture, EventBytes: t.bodyBytes,
		Listeners: cfg.Listeners, Publishers: cfg.Publishers, Stall: cfg.Stall,
	}

	var base procSample
	if cfg.ServerPID > 0 {
		if base, err = readProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("-server-pid: %w", err)
		}
		rep.Server = &serverReport{PID: cfg.ServerPID, RSSBeforeKB: base.RSSKB}
	}
	defer t.closeAll()
	rep.Connect = t.connect(ctx)
	if cfg.Listeners > 0 && len(t.listeners) == 0 {
		return nil, fmt.Errorf("no listener could connect to %s: %v", t.stream, rep.Connect.FailedBy)
	}
	if rep.Server != nil {
		if s, err := readProc(cfg.ServerPID); err == nil {
			rep.Server.RSSConnectedKB = s.RSSKB
			if n := len(t.listeners) + len(t.stalled); n > 0 {
				rep.Server.RSSPerListenerBytes = (s.RSSKB - base.RSSKB) * 1024 / int64(n)
			}
		}
	}

	if cfg.FindMax {
		rep.FindMax = t.findMax(ctx)
	} else {
		p := t.runPhase(ctx, cfg.Rate, cfg.Duration)
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
		if s, err := readProc(cfg.ServerPID); err == nil {
			rep.Server.RSSAfterKB = s.RSSKB
		}
	}
	return rep, nil
}

// connect opens the listeners and the stalled connections, a bounded
// number at a time.
func (t *tester) connect(ctx context.Context) connectReport {
	start := time.Now()
	rep := connectReport{FailedBy: map[string]int{}}
	bufSize := 32 << 10
	if t.cfg.Listeners > 2000 {
		bufSize = 4 << 10 // ten thousand idle listeners need little
	}
	var mu sync.Mutex
	sem := make(chan struct{}, connectParallel)
	var wg sync.WaitGroup
	for i := range t.cfg.Listeners + t.cfg.Stall {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var l *listener
			var s *stalledConn
			var err error
			if i < t.cfg.Listeners {
				l, err = connectListener(ctx, i, t.stream, bufSize, t.cfg.ConnectTimeout)
			} else {
				s, err = openStalled(ctx, t.stream, t.cfg.StallRcvBuf, t.cfg.ConnectTimeout)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				rep.FailedBy[errKind(err)]++
			case l != nil:
				t.listeners = append(t.listeners, l)
				go l.run()
			default:
				t.stalled = append(t.stalled, s)
			}
		})
	}
	wg.Wait()
	rep.Connected = len(t.listeners)
	for _, n := range rep.FailedBy {
		rep.Failed += n
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep
}

func (t *tester) closeAll() {
	for _, l := range t.listeners {
		l.close()
	}
	for _, s := range t.stalled {
		s.close()
	}
}

// runPhase publishes at rate for d, waits up to the settle time for the
// deliveries, and accounts for everything.
func (t *tester) runPhase(ctx context.Context, rate float64, d time.Duration) phaseReport {
	limit := uint64(bitBudget / max(len(t.listeners), 1))
	if t.cfg.Events > 0 {
		limit = min(limit, t.cfg.Events)
	}
	ph := &phase{base: t.nextBase, limit: limit, rate: rate, hist: newShardedHistogram(4 * runtime.GOMAXPROCS(0))}
	for _, l := range t.listeners {
		l.startPhase(ph.base, ph.limit, ph.hist.shard(l.id))
	}
	var before procSample
	if t.cfg.ServerPID > 0 {
		before, _ = readProc(t.cfg.ServerPID)
	}
	ph.start = time.Now()
	ph.deadline = ph.start.Add(d)

	stats := make([]pubStats, t.cfg.Publishers)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		var wg sync.WaitGroup
		for i := range stats {
			wg.Go(func() { stats[i] = publish(ctx, ph, i, t.client, t.ingest, t.inj) })
		}
		wg.Wait()
	}()
	peakRSS := t.watch(ph, pubDone, before.RSSKB)
	pubEnd := time.Now()
	t.settle(ctx, ph)
	t.nextBase = ph.base + min(ph.next.Load(), ph.limit)

	// The rate is over the publishing window; POSTs still in flight at its
	// end complete after it.
	rep := phaseReport{TargetRate: rate, PublishSeconds: min(pubEnd.Sub(ph.start), d).Seconds()}
	rep.Posts = mergePosts(stats)
	if rep.PublishSeconds > 0 {
		rep.AchievedRate = float64(rep.Posts.Accepted) / rep.PublishSeconds
	}
	rep.account(t.listeners, ph)
	if t.cfg.ServerPID > 0 {
		if after, err := readProc(t.cfg.ServerPID); err == nil {
			rep.Server = newPhaseServer(before, after, max(peakRSS, after.RSSKB), time.Since(ph.start), rep.Posts.Accepted, rep.Deliveries.Delivered)
		}
	}
	return rep
}

// watch waits for the publishers, sampling the server's memory every second
// and printing the progress line. It returns the peak RSS seen.
func (t *tester) watch(ph *phase, pubDone <-chan struct{}, peak int64) int64 {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastAcc uint64
	for {
		select {
		case <-pubDone:
			t.clearProgress()
			return peak
		case <-tick.C:
		}
		if t.cfg.ServerPID > 0 {
			if s, err := readProc(t.cfg.ServerPID); err == nil {
				peak = max(peak, s.RSSKB)
			}
		}
		if t.progress != nil {
			acc := ph.accepted.count()
			got, want := t.deliveredSoFar(), acc*uint64(len(t.listeners))
			pct := 100.0
			if want > 0 {
				pct = 100 * float64(got) / float64(want)
			}
			fmt.Fprintf(t.progress, "\r%5.0fs  sent %d  accepted %d  %d/s  delivered %.2f%%   ",
				time.Since(ph.start).Seconds(), ph.next.Load(), acc, acc-lastAcc, pct)
			lastAcc = acc
		}
	}
}

func (t *tester) clearProgress() {
	if t.progress != nil {
		fmt.Fprint(t.progress, "\r"+strings.Repeat(" ", 78)+"\r")
	}
}

func (t *tester) deliveredSoFar() uint64 {
	var n uint64
	for _, l := range t.listeners {
		n += l.progress()
	}
	return n
}

// settle waits until every listener still connected has every accepted
// event, or the settle time has passed, or ctx ended.
func (t *tester) settle(ctx context.Context, ph *phase) {
	deadline := time.Now().Add(t.cfg.Settle)
	want := ph.accepted.count()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		complete := true
		for _, l := range t.listeners {
			if !l.lost.Load() && l.progress() < want {
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
		p := t.runPhase(ctx, rate, t.cfg.Step)
		if ctx.Err() != nil {
			rep.StopReason = cmpString(rep.StopReason, "interrupted")
			return rep
		}
		p.FailReason = p.verdict()
		rep.Steps = append(rep.Steps, p)
		if t.progress != nil {
			fmt.Fprintf(t.progress, "step %2d  %8.0f/s  %s\n", step+1, rate, cmpString(p.FailReason, "pass"))
		}
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
	for _, l := range t.listeners {
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
