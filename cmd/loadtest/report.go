package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is the outcome of one run; -json prints it as is, and the text
// summary shows the same figures under the same names.
type report struct {
	URLs        []string          `json:"urls"`
	PublishURL  string            `json:"publish_url,omitempty"` // -publish-url: events went in there
	IngestPath  string            `json:"ingest_path"`
	StreamPath  string            `json:"stream_path"`
	Scenario    string            `json:"scenario"`
	Fixture     string            `json:"fixture"`
	EventBytes  int               `json:"event_bytes"`
	Listeners   int               `json:"listeners"`
	Publishers  int               `json:"publishers"`
	Stall       int               `json:"stall"`
	Connect     connectReport     `json:"connect"`
	Server      *serverReport     `json:"server,omitempty"`
	Skipped     string            `json:"skipped,omitempty"` // why nothing was published
	Result      *phaseReport      `json:"result,omitempty"`
	Storm       *stormReport      `json:"storm,omitempty"`
	Disconnect  *disconnectReport `json:"disconnect,omitempty"`
	FindMax     *findMaxReport    `json:"find_max,omitempty"`
	Stalled     *stalledReport    `json:"stalled,omitempty"`
	Interrupted bool              `json:"interrupted"`
	Check       checkReport       `json:"check"`
}

func newReport(cfg config, eventBytes int) *report {
	r := &report{
		IngestPath: cfg.IngestPath, StreamPath: cfg.StreamPath, Scenario: cfg.Scenario,
		Fixture: cfg.Fixture, EventBytes: eventBytes,
		Listeners: cfg.Listeners, Publishers: cfg.Publishers, Stall: cfg.Stall,
	}
	for _, u := range cfg.URLs {
		r.URLs = append(r.URLs, u.String())
	}
	if cfg.PublishURL != nil {
		r.PublishURL = cfg.PublishURL.String()
	}
	return r
}

// connectReport is the listeners opened before publishing (all of them but
// in a storm).
type connectReport struct {
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	FailedBy  map[string]int `json:"failed_by,omitempty"`
	Seconds   float64        `json:"seconds"`
}

// serverReport is the server's memory around the run (same host only),
// summed over its processes.
type serverReport struct {
	PIDs                []int `json:"pids"`
	RSSBeforeKB         int64 `json:"rss_before_listeners_kb"`
	RSSConnectedKB      int64 `json:"rss_listeners_connected_kb"`
	RSSPerListenerBytes int64 `json:"rss_per_listener_bytes"`
	RSSAfterKB          int64 `json:"rss_after_kb"`
}

type stalledReport struct {
	Opened          int `json:"opened"`
	DroppedByServer int `json:"dropped_by_server"`
}

// phaseReport is one stretch of publishing at one rate.
type phaseReport struct {
	TargetRate     float64         `json:"target_rate"` // 0: as fast as possible
	PublishSeconds float64         `json:"publish_seconds"`
	AchievedRate   float64         `json:"achieved_rate"` // accepted POSTs per second
	Posts          postReport      `json:"posts"`
	Listeners      phaseListeners  `json:"listeners"`
	Deliveries     deliveries      `json:"deliveries"`
	Latency        latencySummary  `json:"latency"`
	Replicas       []replicaReport `json:"replicas,omitempty"` // with several -url
	// DepartedLatency is what the listeners closed in a mass disconnect
	// received before they left (Latency covers the others).
	DepartedLatency *latencySummary `json:"departed_latency,omitempty"`
	Server          *phaseServer    `json:"server,omitempty"`
	FailReason      string          `json:"fail_reason,omitempty"` // find-max steps only
}

type postReport struct {
	Sent            uint64            `json:"sent"`
	Accepted        uint64            `json:"accepted"`
	Rejected        uint64            `json:"rejected"` // answered, not 2xx
	ByStatus        map[string]uint64 `json:"by_status"`
	TransportErrors uint64            `json:"transport_errors"`
	ErrorsByKind    map[string]uint64 `json:"errors_by_kind,omitempty"`
	Canceled        uint64            `json:"canceled"` // cut by an interrupt
}

// failed is the POSTs that count against the run.
func (p postReport) failed() uint64 { return p.Rejected + p.TransportErrors }

// phaseListeners counts the listeners a phase accounts for.
type phaseListeners struct {
	Owed      int `json:"owed"`             // owed events: connected before or during the phase, not departed
	Connected int `json:"connected_at_end"` // of those, still connected at its end
	Lost      int `json:"lost"`             // of those, disconnected by the server or the network
	Departed  int `json:"departed"`         // closed on purpose (mass disconnect): owed nothing
}

// deliveries: each listener is owed every event accepted from the moment
// its stream started (before the phase, or during it in a storm) to the
// end, whether or not it stayed connected: a listener that drops loses
// everything after its drop.
type deliveries struct {
	Expected   uint64  `json:"expected"`
	Delivered  uint64  `json:"delivered"`
	Lost       uint64  `json:"lost"`
	LossPct    float64 `json:"loss_pct"`
	Duplicates uint64  `json:"duplicates"`
	OutOfOrder uint64  `json:"out_of_order"` // after a later event of the same publisher
	Unexpected uint64  `json:"unexpected"`   // of events whose POST did not succeed
	Stale      uint64  `json:"stale"`        // from an earlier phase
	Foreign    uint64  `json:"foreign"`      // not sent by this run
	PerSecond  float64 `json:"per_second"`
}

// replicaReport is one -url's share of a phase: the listeners connected to
// it, the POSTs sent to it, and what its listeners received of every event
// accepted by any replica.
type replicaReport struct {
	URL        string         `json:"url"`
	Posts      postReport     `json:"posts"`
	Listeners  phaseListeners `json:"listeners"`
	Deliveries deliveries     `json:"deliveries"`
	Latency    latencySummary `json:"latency"`
}

// phaseServer is the server's CPU and memory over one phase, settle time
// included.
type phaseServer struct {
	CPUSeconds       float64 `json:"cpu_seconds"`
	Cores            float64 `json:"cores"`
	CPUUSPerEvent    float64 `json:"cpu_us_per_event"`
	CPUUSPerDelivery float64 `json:"cpu_us_per_delivery"`
	RSSStartKB       int64   `json:"rss_start_kb"`
	RSSPeakKB        int64   `json:"rss_peak_kb"`
	RSSEndKB         int64   `json:"rss_end_kb"`
}

type findMaxReport struct {
	StartRate       float64       `json:"start_rate"`
	Factor          float64       `json:"factor"`
	StepSeconds     float64       `json:"step_seconds"`
	MaxRate         float64       `json:"max_rate"` // highest target rate that passed; 0: none
	MaxAchievedRate float64       `json:"max_achieved_rate"`
	Best            int           `json:"best_step"` // index in Steps, when MaxRate > 0
	StopReason      string        `json:"stop_reason"`
	Steps           []phaseReport `json:"steps"`
}

// checkReport is the verdict the exit status gives: every rate within
// -max-loss.
type checkReport struct {
	MaxLossPct       float64  `json:"max_loss_pct"`
	MinRatePct       float64  `json:"min_rate_pct"`       // of -rate; 0 = not checked
	LossPct          float64  `json:"loss_pct"`           // lost / expected deliveries
	FailedPostsPct   float64  `json:"failed_posts_pct"`   // rejected + transport errors / sent
	MisdeliveredPct  float64  `json:"misdelivered_pct"`   // duplicates + out of order / delivered
	FailedListenPct  float64  `json:"failed_listens_pct"` // failed to connect + lost / attempted
	FailedListeners  int      `json:"failed_listeners"`
	AttemptListeners int      `json:"attempted_listeners"`
	Pass             bool     `json:"pass"`
	Failures         []string `json:"failures,omitempty"`
}

// check fills in r.Check: the run passes when loss, duplicate or
// out-of-order deliveries, failed POSTs and failed listeners are each at
// most maxLoss percent, at least minRate percent of -rate was achieved,
// it was not interrupted and something was measured. A -find-max run
// passes when a step passed (failing steps are its purpose).
func (r *report) check(maxLoss, minRate float64) {
	c := checkReport{MaxLossPct: maxLoss, MinRatePct: minRate}
	fail := func(format string, args ...any) { c.Failures = append(c.Failures, fmt.Sprintf(format, args...)) }
	c.AttemptListeners = r.Listeners + r.Stall
	c.FailedListeners = r.Connect.Failed
	if r.Storm != nil {
		c.FailedListeners += r.Storm.Failed
	}
	p := r.Result
	if r.FindMax != nil && r.FindMax.MaxRate > 0 {
		p = &r.FindMax.Steps[r.FindMax.Best]
	}
	if p != nil {
		c.FailedListeners += p.Listeners.Lost
		c.LossPct = p.Deliveries.LossPct
		c.MisdeliveredPct = pct(p.Deliveries.Duplicates+p.Deliveries.OutOfOrder, p.Deliveries.Delivered)
		if p.Posts.Sent > 0 {
			c.FailedPostsPct = pct(p.Posts.failed(), p.Posts.Sent)
		}
	}
	if c.AttemptListeners > 0 {
		c.FailedListenPct = pct(uint64(c.FailedListeners), uint64(c.AttemptListeners))
	}
	switch {
	case r.Skipped != "":
		fail("%s", r.Skipped)
	case r.FindMax != nil && r.FindMax.MaxRate == 0:
		fail("no -find-max step passed")
	case p != nil && p.Posts.Accepted == 0:
		fail("no POST was accepted")
	}
	if c.LossPct > maxLoss {
		fail("loss %.3f%% > %g%%", c.LossPct, maxLoss)
	}
	if p != nil && r.FindMax == nil && p.TargetRate > 0 && p.AchievedRate < minRate/100*p.TargetRate && !r.Interrupted {
		// Publishers waiting on a slow server: the load asked for was
		// never applied, whatever else the figures say.
		fail("achieved %.0f/s, under %g%% of the -rate %g/s (-min-rate)", p.AchievedRate, minRate, p.TargetRate)
	}
	if c.MisdeliveredPct > maxLoss {
		fail("%d duplicate and %d out-of-order deliveries (%.3f%%) > %g%%",
			p.Deliveries.Duplicates, p.Deliveries.OutOfOrder, c.MisdeliveredPct, maxLoss)
	}
	if c.FailedPostsPct > maxLoss {
		fail("%d failed POSTs (%.3f%%) > %g%%", p.Posts.failed(), c.FailedPostsPct, maxLoss)
	}
	if c.FailedListenPct > maxLoss {
		fail("%d failed listeners (%.3f%%: refused, not 200 or dropped) > %g%%", c.FailedListeners, c.FailedListenPct, maxLoss)
	}
	if r.Interrupted {
		fail("interrupted")
	}
	c.Pass = len(c.Failures) == 0
	r.Check = c
}

func pct(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// mergePosts adds up the publishers i with i%n == rem.
func mergePosts(stats []pubStats, rem, n int) postReport {
	p := postReport{ByStatus: map[string]uint64{}, ErrorsByKind: map[string]uint64{}}
	for i, s := range stats {
		if i%n != rem {
			continue
		}
		p.Sent += s.sent
		p.Accepted += s.accepted
		p.Canceled += s.canceled
		for code, n := range s.byStatus {
			p.ByStatus[strconv.Itoa(code)] += n
			if code/100 != 2 {
				p.Rejected += n
			}
		}
		for kind, n := range s.errs {
			p.ErrorsByKind[kind] += n
			p.TransportErrors += n
		}
	}
	return p
}

// tally sums listener accounts, for the whole phase or one replica.
type tally struct {
	listeners              phaseListeners
	d                      deliveries
	latSum, latMax         int64
	goneLatSum, goneLatMax int64 // of the departed
}

func (t *tally) add(l *listener, a *listenerAcct, acc []uint64, owed suffixCounter) {
	if l.departed.Load() && !l.lost.Load() {
		t.listeners.Departed++
		t.goneLatSum += a.latSum
		t.goneLatMax = max(t.goneLatMax, a.latMax)
		return
	}
	t.listeners.Owed++
	if l.lost.Load() {
		t.listeners.Lost++
	} else {
		t.listeners.Connected++
	}
	t.latSum += a.latSum
	t.latMax = max(t.latMax, a.latMax)
	in, out := a.seen.countIn(acc, a.from)
	t.d.Expected += owed.from(a.from)
	if a.bounded {
		t.d.Expected -= owed.from(max(a.until, a.from))
	}
	t.d.Delivered += in
	t.d.Unexpected += out
	t.d.Duplicates += a.dups
	t.d.OutOfOrder += a.outOfOrder
	t.d.Stale += a.stale
	t.d.Foreign += a.foreign
}

func (t *tally) finish(publishSeconds float64) {
	d := &t.d
	d.Lost = d.Expected - min(d.Delivered, d.Expected)
	d.LossPct = pct(d.Lost, d.Expected)
	if publishSeconds > 0 {
		d.PerSecond = float64(d.Delivered) / publishSeconds
	}
}

// account ends the phase on every listener and fills in the listeners,
// the deliveries and the latency, in total and per replica.
func (p *phaseReport) account(ls []*listener, ph *phase, targets []target, stats []pubStats) {
	acc := ph.accepted.words()
	owed := newSuffixCounter(acc)
	var total tally
	per := make([]tally, len(targets))
	for _, l := range ls {
		a := l.endPhase()
		if a == nil {
			continue // joined after the phase's accounting began
		}
		total.add(l, a, acc, owed)
		per[l.replica].add(l, a, acc, owed)
	}
	total.finish(p.PublishSeconds)
	p.Listeners, p.Deliveries = total.listeners, total.d
	p.Latency = summarize(ph.hists, total.latMax, total.latSum)
	if ph.leaving != nil {
		s := ph.leaving.summary(total.goneLatMax, total.goneLatSum)
		p.DepartedLatency = &s
	}
	if len(targets) < 2 {
		return
	}
	for i, tg := range targets {
		per[i].finish(p.PublishSeconds)
		p.Replicas = append(p.Replicas, replicaReport{
			URL: tg.base, Posts: mergePosts(stats, i, len(targets)),
			Listeners: per[i].listeners, Deliveries: per[i].d,
			Latency: ph.hists[i].summary(per[i].latMax, per[i].latSum),
		})
	}
}

func newPhaseServer(before, after procSample, peakKB int64, wall time.Duration, accepted, delivered uint64) *phaseServer {
	cpu := after.CPU - before.CPU
	s := &phaseServer{
		CPUSeconds: cpu.Seconds(),
		Cores:      cpu.Seconds() / wall.Seconds(),
		RSSStartKB: before.RSSKB,
		RSSPeakKB:  peakKB,
		RSSEndKB:   after.RSSKB,
	}
	us := float64(cpu) / float64(time.Microsecond)
	if accepted > 0 {
		s.CPUUSPerEvent = us / float64(accepted)
	}
	if delivered > 0 {
		s.CPUUSPerDelivery = us / float64(delivered)
	}
	return s
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// writeSettings prints what the run is about to do, before it starts.
func writeSettings(w io.Writer, cfg config) {
	for i, u := range cfg.URLs {
		label := "target"
		if len(cfg.URLs) > 1 {
			label = fmt.Sprintf("replica %d", i+1)
		}
		fmt.Fprintf(w, "%-9s %s  (POST %s, GET %s)\n", label, u, cfg.IngestPath, cfg.StreamPath)
	}
	if cfg.PublishURL != nil {
		fmt.Fprintf(w, "publish   %s%s  (the targets relay it)\n", cfg.PublishURL, cfg.IngestPath)
	}
	rate := "as fast as possible"
	if cfg.Rate > 0 {
		rate = fmt.Sprintf("%g events/s", cfg.Rate)
	}
	if cfg.FindMax {
		rate = fmt.Sprintf("-find-max from %g/s x%g per %s step", cfg.StartRate, cfg.Factor, cfg.Step)
	}
	limit := ""
	if cfg.Events > 0 {
		limit = fmt.Sprintf(" or %d events", cfg.Events)
	}
	fmt.Fprintf(w, "load      %d listeners, %d stalled, %d publishers at %s for %s%s, fixture %s\n",
		cfg.Listeners, cfg.Stall, cfg.Publishers, rate, cfg.Duration, limit, cfg.Fixture)
	if cfg.HTTP2 {
		proto := "h2c (cleartext, prior knowledge)"
		if cfg.URLs[0].Scheme == "https" {
			proto = "h2 over TLS"
		}
		fmt.Fprintf(w, "protocol  HTTP/2, %s: %d listeners per connection, the publishers on one\n", proto, cfg.StreamsPerConn)
	}
	switch cfg.Scenario {
	case scenarioStorm:
		how := "all at once"
		if cfg.Ramp > 0 {
			how = "over " + cfg.Ramp.String()
		}
		fmt.Fprintf(w, "scenario  storm: the %d listeners connect %s, %s into publishing\n", cfg.Listeners, how, cfg.Warmup)
	case scenarioDisconnect:
		fmt.Fprintf(w, "scenario  disconnect: %d of the %d listeners close at once %s into publishing; survivors' latency per %s\n",
			cfg.Listeners-cfg.Survivors, cfg.Listeners, cfg.Warmup, cfg.Window)
	}
	fmt.Fprintf(w, "check     fails when loss, duplicates or disorder, failed POSTs or failed listeners exceed %g%% (-max-loss)", cfg.MaxLoss)
	if cfg.Rate > 0 && cfg.MinRate > 0 && !cfg.FindMax {
		fmt.Fprintf(w, ", or under %g%% of -rate is achieved (-min-rate)", cfg.MinRate)
	}
	fmt.Fprintln(w)
}

// writeText prints the human-readable summary; the settings were printed
// before the run.
func (r *report) writeText(w io.Writer) {
	if r.Storm == nil || r.Stall > 0 {
		fmt.Fprintf(w, "connect   %d listeners in %.1f s", r.Connect.Connected, r.Connect.Seconds)
		if r.Connect.Failed > 0 {
			fmt.Fprintf(w, ", %d FAILED (%s)", r.Connect.Failed, formatCounts(r.Connect.FailedBy))
		}
		fmt.Fprintln(w)
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server    pid %s: RSS %s before listeners, %s with them = %s per listener; %s at the end\n",
			joinInts(s.PIDs), kb(s.RSSBeforeKB), kb(s.RSSConnectedKB), bytesStr(s.RSSPerListenerBytes), kb(s.RSSAfterKB))
	}
	if r.Skipped != "" {
		fmt.Fprintf(w, "skipped   %s\n", r.Skipped)
	}
	if r.Result != nil {
		fmt.Fprintln(w)
		r.Result.writeText(w)
	}
	if r.Storm != nil {
		r.Storm.writeText(w)
	}
	if r.Disconnect != nil {
		r.Disconnect.writeText(w)
	}
	if f := r.FindMax; f != nil {
		fmt.Fprintf(w, "\nfind-max  from %.0f/s, x%.2f per %.0f s step, then between the best pass and the first failure\n", f.StartRate, f.Factor, f.StepSeconds)
		fmt.Fprintf(w, "  %10s %10s %8s %9s %9s %9s  %s\n", "target/s", "achieved/s", "loss %", "p50 ms", "p99 ms", "µs/event", "verdict")
		for _, s := range f.Steps {
			var us float64
			if s.Server != nil {
				us = s.Server.CPUUSPerEvent
			}
			fmt.Fprintf(w, "  %10.0f %10.0f %8.3f %9.1f %9.1f %9.1f  %s\n", s.TargetRate, s.AchievedRate,
				s.Deliveries.LossPct, s.Latency.P50MS, s.Latency.P99MS, us, cmpString(s.FailReason, "pass"))
		}
		fmt.Fprintf(w, "stopped   %s\n", f.StopReason)
		if f.MaxRate > 0 {
			fmt.Fprintf(w, "MAX       %.0f events/s sustained (achieved %.0f/s) = %.0f deliveries/s\n",
				f.MaxRate, f.MaxAchievedRate, f.Steps[f.Best].Deliveries.PerSecond)
			fmt.Fprintln(w, "\nbest step:")
			f.Steps[f.Best].writeText(w)
		} else {
			fmt.Fprintln(w, "MAX       no step passed")
		}
	}
	if s := r.Stalled; s != nil {
		fmt.Fprintf(w, "stalled   %d opened, %d dropped by the server\n", s.Opened, s.DroppedByServer)
	}
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: figures cover the run up to the interrupt")
	}
	c := r.Check
	verdict := "PASS"
	if !c.Pass {
		verdict = "FAIL: " + strings.Join(c.Failures, "; ")
	}
	fmt.Fprintf(w, "\ncheck     loss %.3f%%, duplicate or out of order %.3f%%, failed POSTs %.3f%%, failed listeners %d of %d (%.3f%%), limit %g%%: %s\n",
		c.LossPct, c.MisdeliveredPct, c.FailedPostsPct, c.FailedListeners, c.AttemptListeners, c.FailedListenPct, c.MaxLossPct, verdict)
}

func (p *phaseReport) writeText(w io.Writer) {
	target := "as fast as possible"
	if p.TargetRate > 0 {
		target = fmt.Sprintf("%.0f/s", p.TargetRate)
	}
	fmt.Fprintf(w, "publish   target %s, achieved %.0f/s over %.1f s\n", target, p.AchievedRate, p.PublishSeconds)
	fmt.Fprintf(w, "POSTs     %s\n", p.Posts.text())
	d := p.Deliveries
	fmt.Fprintf(w, "delivered %s", d.text(p.Listeners))
	fmt.Fprintf(w, "; %.0f deliveries/s\n", d.PerSecond)
	fmt.Fprintf(w, "latency   %s\n", p.Latency.text())
	if l := p.DepartedLatency; l != nil {
		fmt.Fprintf(w, "departed  %s, before they left\n", l.text())
	}
	for i, rp := range p.Replicas {
		fmt.Fprintf(w, "replica %d %s: POSTs %d accepted of %d; delivered %s; p99 %.2f ms\n",
			i+1, rp.URL, rp.Posts.Accepted, rp.Posts.Sent, rp.Deliveries.text(rp.Listeners), rp.Latency.P99MS)
	}
	if s := p.Server; s != nil {
		fmt.Fprintf(w, "server    CPU %.2f s (%.2f cores) = %.1f µs per accepted event, %.3f µs per delivery; RSS %s, peak %s, end %s\n",
			s.CPUSeconds, s.Cores, s.CPUUSPerEvent, s.CPUUSPerDelivery, kb(s.RSSStartKB), kb(s.RSSPeakKB), kb(s.RSSEndKB))
	}
}

func (p postReport) text() string {
	s := fmt.Sprintf("%d sent, %d accepted, %d rejected [%s], %d transport errors",
		p.Sent, p.Accepted, p.Rejected, formatCounts(p.ByStatus), p.TransportErrors)
	if p.TransportErrors > 0 {
		s += " [" + formatCounts(p.ErrorsByKind) + "]"
	}
	if p.Canceled > 0 {
		s += fmt.Sprintf(", %d canceled", p.Canceled)
	}
	return s
}

func (d deliveries) text(l phaseListeners) string {
	s := fmt.Sprintf("%d of %d expected (%d listeners owed, %d lost", d.Delivered, d.Expected, l.Owed, l.Lost)
	if l.Departed > 0 {
		s += fmt.Sprintf(", %d departed", l.Departed)
	}
	s += fmt.Sprintf("): loss %.3f%%, %d duplicates, %d out of order", d.LossPct, d.Duplicates, d.OutOfOrder)
	if d.Unexpected+d.Stale+d.Foreign > 0 {
		s += fmt.Sprintf(", %d of failed POSTs, %d stale, %d foreign", d.Unexpected, d.Stale, d.Foreign)
	}
	return s
}

func (l latencySummary) text() string {
	return fmt.Sprintf("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  mean %.2f ms  (%d samples)",
		l.P50MS, l.P90MS, l.P99MS, l.MaxMS, l.MeanMS, l.Count)
}

func formatCounts[V int | uint64](m map[string]V) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, "+")
}

func kb(n int64) string { return bytesStr(n * 1024) }

func bytesStr(n int64) string {
	switch {
	case n >= 1<<20 || n <= -1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 10<<10 || n <= -10<<10:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
