package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// healthEvery is how often the storm and disconnect scenarios read each
// replica's health: often enough to time a release within a fraction of
// a second, rarely enough to cost the server nothing.
const healthEvery = 200 * time.Millisecond

// stormReport is a reconnect storm: listeners connecting all at once (or
// over a ramp) while events are being published.
type stormReport struct {
	AtSeconds   float64        `json:"at_s"` // into publishing
	RampSeconds float64        `json:"ramp_s"`
	Listeners   int            `json:"listeners"`
	Connected   int            `json:"connected"`
	Failed      int            `json:"failed"`
	FailedBy    map[string]int `json:"failed_by,omitempty"`
	Seconds     float64        `json:"seconds"` // from the storm's start to the last answer
	// TTFB is from dialling to the stream's first line: the moment the
	// listener is subscribed and owed every later event.
	TTFB   latencySummary `json:"time_to_first_byte"`
	Health *healthReport  `json:"health,omitempty"`
	// CPU is what the storm cost, from its start to the last answer: what
	// bounds its duration on a machine where the tool and the server
	// share the cores. Absent when not measurable (no /proc).
	CPU *stormCPU `json:"cpu,omitempty"`
}

// stormCPU is the CPU time the storm took, and how many connection
// attempts the kernel dropped because an accept queue was full (machine-
// wide; each retried after a second or more).
type stormCPU struct {
	ServerSeconds   *float64 `json:"server_s,omitempty"` // with -server-pid
	ToolSeconds     float64  `json:"tool_s"`
	Cores           int      `json:"cores"`
	ListenOverflows *int64   `json:"listen_overflows,omitempty"`
}

// disconnectReport is a mass disconnect: all listeners but the survivors
// closing at once while events are being published.
type disconnectReport struct {
	AtSeconds float64 `json:"at_s"` // into publishing
	Survivors int     `json:"survivors"`
	Departed  int     `json:"departed"`
	CloseMS   float64 `json:"close_ms"` // the tool's time to close their connections
	// ReleasedAfterS is when the servers' health first reported no more
	// listeners than the survivors (and the -stall connections); null when
	// it never did or health has no "listeners".
	ReleasedAfterS *float64       `json:"released_after_s"`
	Windows        []windowReport `json:"windows"`
	RSS            []rssSample    `json:"rss,omitempty"`
	Health         *healthReport  `json:"health,omitempty"`

	windows *windows  // filled in until the phase is accounted for
	at      time.Time // when the disconnect happened
}

// finish reports the windows, once the phase's deliveries have settled.
func (d *disconnectReport) finish() { d.Windows = d.windows.report(d.at) }

// windowReport is the survivors' latency for the events published in one
// window, relative to the disconnect; the first window is the one before.
type windowReport struct {
	FromS   float64        `json:"from_s"`
	ToS     float64        `json:"to_s"`
	Latency latencySummary `json:"latency"`
	RSSKB   int64          `json:"rss_kb,omitempty"` // the servers' RSS at the window's end
}

type rssSample struct {
	AfterS float64 `json:"after_s"` // after the disconnect
	RSSKB  int64   `json:"rss_kb"`
}

// healthReport is what the health endpoints answered while polled.
type healthReport struct {
	Path         string         `json:"path"`
	Polls        int            `json:"polls"`
	ByStatus     map[string]int `json:"by_status"`
	Errors       map[string]int `json:"errors,omitempty"` // timeouts included: a probe would fail
	Available    bool           `json:"available"`        // a JSON "listeners" field was seen
	MaxListeners int64          `json:"max_listeners"`    // summed over the replicas
}

// startStormCPU samples the CPU counters; the function it returns
// reports what was spent since, or nil when this host has no /proc.
func (t *tester) startStormCPU() func() *stormCPU {
	tool0, err := readProc(os.Getpid())
	if err != nil {
		return func() *stormCPU { return nil }
	}
	server0, serverErr := readProcs(t.cfg.ServerPIDs)
	overflows0, overflowErr := readListenOverflows()
	return func() *stormCPU {
		tool, err := readProc(os.Getpid())
		if err != nil {
			return nil
		}
		c := &stormCPU{ToolSeconds: (tool.CPU - tool0.CPU).Seconds(), Cores: runtime.NumCPU()}
		if server, err := readProcs(t.cfg.ServerPIDs); len(t.cfg.ServerPIDs) > 0 && serverErr == nil && err == nil {
			s := (server.CPU - server0.CPU).Seconds()
			c.ServerSeconds = &s
		}
		if n, err := readListenOverflows(); overflowErr == nil && err == nil {
			n -= overflows0
			c.ListenOverflows = &n
		}
		return c
	}
}

// storm connects the listeners during ph: all at once -warmup into it, or
// spread over -ramp. Each becomes owed the events taken after its first
// line arrived. It returns at the end of publishing, or when the last
// connection attempt ended if that is later.
func (t *tester) storm(ctx context.Context, ph *phase, rep *stormReport) {
	n := t.cfg.Listeners
	rep.Listeners, rep.AtSeconds, rep.RampSeconds = n, t.cfg.Warmup.Seconds(), t.cfg.Ramp.Seconds()
	stopHealth := make(chan struct{})
	health := t.pollHealth(ctx, stopHealth, nil)
	defer func() { rep.Health = <-health }()
	defer close(stopHealth)
	begin := ph.start.Add(t.cfg.Warmup)
	if !sleepUntil(ctx, begin) {
		return
	}
	cpu := t.startStormCPU()
	ttfb := newExactHistogram()
	var mu sync.Mutex
	failedBy := map[string]int{}
	var lastNS atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if t.cfg.Ramp > 0 && !sleepUntil(ctx, begin.Add(t.cfg.Ramp*time.Duration(i)/time.Duration(n))) {
				return
			}
			replica := i % len(t.targets)
			start := time.Now()
			l, err := t.openListener(ctx, i, replica)
			if err != nil {
				mu.Lock()
				failedBy[errKind(err)]++
				mu.Unlock()
				return
			}
			now := time.Now()
			ttfb.record(int64(now.Sub(start)))
			for ns := int64(now.Sub(begin)); ; {
				if last := lastNS.Load(); ns <= last || lastNS.CompareAndSwap(last, ns) {
					break
				}
			}
			l.startPhase(ph, ph.watermark())
			t.addListener(l)
			go l.run()
		})
	}
	wg.Wait()
	rep.CPU = cpu()
	sleepUntil(ctx, ph.deadline) // health is polled until the end of publishing
	rep.TTFB = ttfb.summary()
	rep.Connected = int(rep.TTFB.Count)
	rep.FailedBy = failedBy
	for _, c := range failedBy {
		rep.Failed += c
	}
	// Not started because of an interrupt: failed too.
	rep.Failed += n - rep.Connected - rep.Failed
	rep.Seconds = time.Duration(lastNS.Load()).Seconds()
}

// disconnect closes every listener but the survivors -warmup into ph, then
// samples the servers' memory at each window's end and at -rss-after, and
// polls their health until the end of publishing or the last sample.
func (t *tester) disconnect(ctx context.Context, ph *phase, rep *disconnectReport) {
	at := ph.start.Add(t.cfg.Warmup)
	rep.AtSeconds = t.cfg.Warmup.Seconds()
	var release atomic.Int64
	release.Store(-1)
	var releasedNS atomic.Int64
	stopHealth := make(chan struct{})
	health := t.pollHealth(ctx, stopHealth, func(listeners int64) {
		if r := release.Load(); r >= 0 && listeners <= r && releasedNS.Load() == 0 {
			releasedNS.Store(max(int64(time.Since(at)), 1))
		}
	})
	defer func() {
		rep.Health = <-health
		if ns := releasedNS.Load(); ns > 0 {
			s := time.Duration(ns).Seconds()
			rep.ReleasedAfterS = &s
		}
	}()
	rep.windows, rep.at = ph.windows, at
	defer close(stopHealth)
	if !sleepUntil(ctx, at) {
		return
	}

	// Survivors the server already dropped stay lost, owed everything.
	var leaving []*listener
	for _, l := range t.listenerList() {
		switch {
		case l.id >= t.cfg.Survivors:
			leaving = append(leaving, l)
		case !l.lost.Load():
			rep.Survivors++
		}
	}
	until := ph.watermark()
	begin := time.Now()
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 { // a few closers: a close is one syscall and a wake-up
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(len(leaving)); i = next.Add(1) - 1 {
				leaving[i].depart(until)
			}
		})
	}
	wg.Wait()
	rep.CloseMS = float64(time.Since(begin)) / float64(time.Millisecond)
	for _, l := range leaving {
		if l.departed.Load() {
			rep.Departed++
		}
		l.close() // their readers have ended, or soon will
	}
	release.Store(int64(rep.Survivors + len(t.stalled)))

	end := ph.deadline
	type sample struct {
		at     time.Duration
		window int // -1: an -rss-after sample
	}
	var samples []sample
	if len(t.cfg.ServerPIDs) > 0 {
		for i := 1; i < len(ph.windows.hists); i++ {
			samples = append(samples, sample{at: time.Duration(i) * t.cfg.Window, window: i})
		}
		for _, d := range t.cfg.RSSAfter {
			samples = append(samples, sample{at: d, window: -1})
			end = latest(end, at.Add(d))
		}
		slices.SortStableFunc(samples, func(a, b sample) int { return int(a.at - b.at) })
	}
	for _, s := range samples {
		if !sleepUntil(ctx, at.Add(s.at)) {
			return
		}
		p, err := readProcs(t.cfg.ServerPIDs)
		if err != nil {
			continue
		}
		if s.window >= 0 {
			ph.windows.rss[s.window] = p.RSSKB
		} else {
			rep.RSS = append(rep.RSS, rssSample{AfterS: s.at.Seconds(), RSSKB: p.RSSKB})
		}
	}
	sleepUntil(ctx, end)
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pollHealth reads every replica's health every healthEvery until stop is
// closed, and sends its report on the returned channel. seen, when not
// nil, gets the listeners summed over the replicas after each round where
// every replica reported them.
func (t *tester) pollHealth(ctx context.Context, stop <-chan struct{}, seen func(int64)) <-chan *healthReport {
	out := make(chan *healthReport, 1)
	if t.cfg.HealthPath == "" {
		out <- nil
		return out
	}
	rep := &healthReport{Path: t.cfg.HealthPath, ByStatus: map[string]int{}, Errors: map[string]int{}}
	// No proxy, as for the publishers: the target is measured directly.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	go func() {
		defer func() { out <- rep }()
		defer client.CloseIdleConnections()
		tick := time.NewTicker(healthEvery)
		defer tick.Stop()
		for {
			var sum int64
			complete := true
			for _, tg := range t.targets {
				n, ok := t.readHealth(ctx, client, tg.health, rep)
				sum += n
				complete = complete && ok
			}
			if complete {
				rep.Available = true
				rep.MaxListeners = max(rep.MaxListeners, sum)
				if seen != nil {
					seen(sum)
				}
			}
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// readHealth does one poll and returns the "listeners" it reported.
func (t *tester) readHealth(ctx context.Context, client *http.Client, url string, rep *healthReport) (int64, bool) {
	rep.Polls++
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		rep.Errors["other"]++
		return 0, false
	}
	resp, err := client.Do(req)
	if err != nil {
		rep.Errors[errKind(err)]++
		return 0, false
	}
	defer resp.Body.Close()
	rep.ByStatus[strconv.Itoa(resp.StatusCode)]++
	var body struct {
		Listeners *int64 `json:"listeners"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil || body.Listeners == nil {
		return 0, false
	}
	return *body.Listeners, true
}

// windows is the survivors' latency, by publish time, in windows of equal
// width: the first one before the disconnect, as a baseline.
type windows struct {
	start int64 // unix ns of the first window's start
	width int64
	hists []*exactHistogram
	rss   []int64 // written by the disconnect goroutine, read after it
}

func newWindows(at time.Time, width time.Duration, end time.Time) *windows {
	n := 1 + int((end.Sub(at)+width-1)/width)
	w := &windows{start: at.Add(-width).UnixNano(), width: int64(width), rss: make([]int64, n)}
	for range n {
		w.hists = append(w.hists, newExactHistogram())
	}
	return w
}

func (w *windows) record(sentNS, lat int64) {
	if sentNS < w.start {
		return
	}
	if i := (sentNS - w.start) / w.width; i < int64(len(w.hists)) {
		w.hists[i].record(lat)
	}
}

func (w *windows) report(at time.Time) []windowReport {
	if w == nil {
		return nil
	}
	var out []windowReport
	for i, h := range w.hists {
		from := time.Duration(w.start + int64(i)*w.width - at.UnixNano())
		out = append(out, windowReport{
			FromS: from.Seconds(), ToS: (from + time.Duration(w.width)).Seconds(),
			Latency: h.summary(), RSSKB: w.rss[i],
		})
	}
	return out
}

func (s *stormReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "storm     %d listeners from %.1f s into publishing", s.Listeners, s.AtSeconds)
	if s.RampSeconds > 0 {
		fmt.Fprintf(w, " over %.1f s", s.RampSeconds)
	}
	fmt.Fprintf(w, ": %d connected, %d failed", s.Connected, s.Failed)
	if len(s.FailedBy) > 0 {
		fmt.Fprintf(w, " (%s)", formatCounts(s.FailedBy))
	}
	fmt.Fprintf(w, ", the last after %.2f s\n", s.Seconds)
	l := s.TTFB
	fmt.Fprintf(w, "TTFB      p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (time to the stream's first line)\n",
		l.P50MS, l.P90MS, l.P99MS, l.MaxMS)
	if c := s.CPU; c != nil {
		fmt.Fprintf(w, "cpu       until the last answer: load tool %.2f s", c.ToolSeconds)
		busy := c.ToolSeconds
		if c.ServerSeconds != nil {
			fmt.Fprintf(w, ", server %.2f s", *c.ServerSeconds)
			busy += *c.ServerSeconds
		}
		fmt.Fprintf(w, ": on %d cores, at least %.2f s of wall time", c.Cores, busy/float64(c.Cores))
		if c.ListenOverflows != nil {
			fmt.Fprintf(w, "; %d connection attempts dropped by a full accept queue (host-wide), each retried after ≥ 1 s", *c.ListenOverflows)
		}
		fmt.Fprintln(w)
	}
	s.Health.writeText(w)
}

func (d *disconnectReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "disconnect %d closed at %.1f s into publishing (in %.0f ms), %d survivors; ",
		d.Departed, d.AtSeconds, d.CloseMS, d.Survivors)
	if d.ReleasedAfterS != nil {
		fmt.Fprintf(w, "server back to %d listeners after %.2f s\n", d.Survivors, *d.ReleasedAfterS)
	} else {
		fmt.Fprintln(w, "server release not seen (health without \"listeners\", or never back to the survivors)")
	}
	fmt.Fprintln(w, "survivors' latency by publish time, relative to the disconnect:")
	fmt.Fprintf(w, "  %13s %8s %9s %9s %9s %9s %10s\n", "window s", "received", "p50 ms", "p90 ms", "p99 ms", "max ms", "server RSS")
	for _, win := range d.Windows {
		rss := "-"
		if win.RSSKB > 0 {
			rss = kb(win.RSSKB)
		}
		l := win.Latency
		fmt.Fprintf(w, "  %6.1f..%-6.1f %8d %9.1f %9.1f %9.1f %9.1f %10s\n",
			win.FromS, win.ToS, l.Count, l.P50MS, l.P90MS, l.P99MS, l.MaxMS, rss)
	}
	for _, s := range d.RSS {
		fmt.Fprintf(w, "RSS       %s %.0f s after the disconnect\n", kb(s.RSSKB), s.AfterS)
	}
	d.Health.writeText(w)
}

func (h *healthReport) writeText(w io.Writer) {
	if h == nil {
		return
	}
	fmt.Fprintf(w, "health    %s polled %d times: [%s]", h.Path, h.Polls, formatCounts(h.ByStatus))
	if len(h.Errors) > 0 {
		fmt.Fprintf(w, ", errors [%s]", formatCounts(h.Errors))
	}
	if h.Available {
		fmt.Fprintf(w, "; at most %d listeners", h.MaxListeners)
	} else {
		fmt.Fprint(w, "; no \"listeners\" figure")
	}
	fmt.Fprintln(w)
}
