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

// report is the outcome of one run; -json prints it as is.
type report struct {
	URL         string         `json:"url"`
	IngestPath  string         `json:"ingest_path"`
	StreamPath  string         `json:"stream_path"`
	Fixture     string         `json:"fixture"`
	EventBytes  int            `json:"event_bytes"`
	Listeners   int            `json:"listeners"`
	Publishers  int            `json:"publishers"`
	Stall       int            `json:"stall"`
	Connect     connectReport  `json:"connect"`
	Server      *serverReport  `json:"server,omitempty"`
	Result      *phaseReport   `json:"result,omitempty"`
	FindMax     *findMaxReport `json:"find_max,omitempty"`
	Stalled     *stalledReport `json:"stalled,omitempty"`
	Interrupted bool           `json:"interrupted"`
}

type connectReport struct {
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	FailedBy  map[string]int `json:"failed_by,omitempty"`
	Seconds   float64        `json:"seconds"`
}

// serverReport is the server's memory around the run (same host only).
type serverReport struct {
	PID                 int   `json:"pid"`
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
	TargetRate     float64        `json:"target_rate"` // 0: as fast as possible
	PublishSeconds float64        `json:"publish_seconds"`
	AchievedRate   float64        `json:"achieved_rate"` // accepted POSTs per second
	Posts          postReport     `json:"posts"`
	Listeners      phaseListeners `json:"listeners"`
	Deliveries     deliveries     `json:"deliveries"`
	Latency        latencySummary `json:"latency"`
	Server         *phaseServer   `json:"server,omitempty"`
	FailReason     string         `json:"fail_reason,omitempty"` // find-max steps only
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

type phaseListeners struct {
	AtStart    int `json:"at_start"`
	Throughout int `json:"throughout"` // connected from the start to the end of the phase
	Lost       int `json:"lost"`       // disconnected during the phase
}

// deliveries counts only listeners connected throughout the phase.
type deliveries struct {
	Expected   uint64  `json:"expected"` // accepted x listeners throughout
	Delivered  uint64  `json:"delivered"`
	Lost       uint64  `json:"lost"`
	LossPct    float64 `json:"loss_pct"`
	Duplicates uint64  `json:"duplicates"`
	Unexpected uint64  `json:"unexpected"` // of events whose POST did not succeed
	Stale      uint64  `json:"stale"`      // from an earlier phase
	Foreign    uint64  `json:"foreign"`    // not sent by this run
	PerSecond  float64 `json:"per_second"`
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

func mergePosts(stats []pubStats) postReport {
	p := postReport{ByStatus: map[string]uint64{}, ErrorsByKind: map[string]uint64{}}
	for _, s := range stats {
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

// account ends the phase on every listener and fills in the deliveries and
// the latency.
func (p *phaseReport) account(ls []*listener, ph *phase) {
	acc := ph.accepted.words()
	accepted := ph.accepted.count()
	d := &p.Deliveries
	var latSum, latMax int64
	for _, l := range ls {
		a, throughout := l.endPhase()
		latSum += a.latSum
		latMax = max(latMax, a.latMax)
		if a.connected {
			p.Listeners.AtStart++
			if !throughout {
				p.Listeners.Lost++
			}
		}
		if !throughout {
			continue
		}
		p.Listeners.Throughout++
		in, out := a.seen.countIn(acc)
		d.Delivered += in
		d.Unexpected += out
		d.Duplicates += a.dups
		d.Stale += a.stale
		d.Foreign += a.foreign
	}
	d.Expected = accepted * uint64(p.Listeners.Throughout)
	d.Lost = d.Expected - d.Delivered
	if d.Expected > 0 {
		d.LossPct = 100 * float64(d.Lost) / float64(d.Expected)
	}
	if p.PublishSeconds > 0 {
		d.PerSecond = float64(d.Delivered) / p.PublishSeconds
	}
	p.Latency = ph.hist.summary(latMax, latSum)
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

// writeText prints the human-readable summary.
func (r *report) writeText(w io.Writer) {
	fmt.Fprintf(w, "target    %s  (POST %s, GET %s)\n", r.URL, r.IngestPath, r.StreamPath)
	fmt.Fprintf(w, "load      %d listeners, %d stalled, %d publishers, fixture %s (%d bytes/event)\n",
		r.Listeners, r.Stall, r.Publishers, r.Fixture, r.EventBytes)
	fmt.Fprintf(w, "connect   %d listeners in %.1f s", r.Connect.Connected, r.Connect.Seconds)
	if r.Connect.Failed > 0 {
		fmt.Fprintf(w, ", %d FAILED (%s)", r.Connect.Failed, formatCounts(r.Connect.FailedBy))
	}
	fmt.Fprintln(w)
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server    pid %d: RSS %s before listeners, %s with them = %s per listener; %s at the end\n",
			s.PID, kb(s.RSSBeforeKB), kb(s.RSSConnectedKB), bytesStr(s.RSSPerListenerBytes), kb(s.RSSAfterKB))
	}
	if r.Result != nil {
		fmt.Fprintln(w)
		r.Result.writeText(w)
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
}

func (p *phaseReport) writeText(w io.Writer) {
	target := "as fast as possible"
	if p.TargetRate > 0 {
		target = fmt.Sprintf("%.0f/s", p.TargetRate)
	}
	fmt.Fprintf(w, "publish   target %s, achieved %.0f/s over %.1f s\n", target, p.AchievedRate, p.PublishSeconds)
	fmt.Fprintf(w, "POSTs     %d sent, %d accepted, %d rejected [%s], %d transport errors",
		p.Posts.Sent, p.Posts.Accepted, p.Posts.Rejected, formatCounts(p.Posts.ByStatus), p.Posts.TransportErrors)
	if p.Posts.TransportErrors > 0 {
		fmt.Fprintf(w, " [%s]", formatCounts(p.Posts.ErrorsByKind))
	}
	if p.Posts.Canceled > 0 {
		fmt.Fprintf(w, ", %d canceled", p.Posts.Canceled)
	}
	fmt.Fprintln(w)
	d := p.Deliveries
	fmt.Fprintf(w, "delivered %d of %d expected (%d listeners throughout, %d lost during the run): loss %.3f%%, %d duplicates",
		d.Delivered, d.Expected, p.Listeners.Throughout, p.Listeners.Lost, d.LossPct, d.Duplicates)
	if d.Unexpected+d.Stale+d.Foreign > 0 {
		fmt.Fprintf(w, ", %d of failed POSTs, %d stale, %d foreign", d.Unexpected, d.Stale, d.Foreign)
	}
	fmt.Fprintf(w, "; %.0f deliveries/s\n", d.PerSecond)
	l := p.Latency
	fmt.Fprintf(w, "latency   p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  mean %.2f ms  (%d samples)\n",
		l.P50MS, l.P90MS, l.P99MS, l.MaxMS, l.MeanMS, l.Count)
	if s := p.Server; s != nil {
		fmt.Fprintf(w, "server    CPU %.2f s (%.2f cores) = %.1f µs per accepted event, %.3f µs per delivery; RSS %s, peak %s, end %s\n",
			s.CPUSeconds, s.Cores, s.CPUUSPerEvent, s.CPUUSPerDelivery, kb(s.RSSStartKB), kb(s.RSSPeakKB), kb(s.RSSEndKB))
	}
}

func formatCounts[V int | uint64](m map[string]V) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
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
