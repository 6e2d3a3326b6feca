package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"event-dispatcher/pkg/broadcast"
)

// A storm: listeners that connect while events are published are owed
// exactly the events taken after their first line, and receive them; the
// time to the first byte is measured for each. The scenario tests check
// counts, never speed (-min-rate 0): a loaded machine may publish slower
// than -rate asks.
func TestStorm(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	const n = 60
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-scenario", "storm", "-listeners", fmt.Sprint(n),
		"-publishers", "8", "-rate", "100", "-duration", "2s", "-warmup", "500ms", "-settle", "30s", "-min-rate", "0",
		"-server-pid", fmt.Sprint(os.Getpid())) // the dispatcher runs in this process
	if err != nil {
		t.Fatalf("%v: %+v", err, rep.Check)
	}
	s := rep.Storm
	if c := s.CPU; c == nil || c.ServerSeconds == nil || c.ListenOverflows == nil || c.Cores < 1 || c.ToolSeconds < 0 || *c.ListenOverflows < 0 {
		t.Errorf("storm CPU = %+v, want the tool's, the server's and the host's accept-queue overflows", c)
	}
	if s == nil || s.Listeners != n || s.Connected != n || s.Failed != 0 || s.TTFB.Count != n {
		t.Fatalf("storm = %+v, want %d connected", s, n)
	}
	if l := s.TTFB; l.P50MS <= 0 || l.P99MS < l.P50MS || l.MaxMS < l.P99MS {
		t.Errorf("time to first byte = %+v, want ordered positive figures", l)
	}
	p := rep.Result
	d := p.Deliveries
	if d.Lost != 0 || d.Delivered != d.Expected || d.Duplicates != 0 || p.Listeners.Owed != n {
		t.Errorf("deliveries = %+v, listeners %+v: want everything owed delivered", d, p.Listeners)
	}
	// Joining half a second into publishing, no listener is owed the
	// first events: fewer than accepted x listeners.
	if d.Expected == 0 || d.Expected >= p.Posts.Accepted*n {
		t.Errorf("expected %d of %d accepted x %d listeners: want the events before the storm left out", d.Expected, p.Posts.Accepted, n)
	}
	if h := s.Health; h == nil || !h.Available || h.Polls == 0 || h.MaxListeners < 1 || h.ByStatus["200"] == 0 {
		t.Errorf("health = %+v, want polls that saw listeners", h)
	}
}

// A mass disconnect: the departed listeners are owed nothing, the
// survivors everything; their latency is reported per window, the
// server's release is seen on /health, and its RSS is sampled.
func TestMassDisconnect(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-scenario", "disconnect", "-listeners", "40", "-survivors", "3",
		"-publishers", "8", "-rate", "100", "-duration", "3s", "-warmup", "1s", "-window", "500ms",
		"-server-pid", fmt.Sprint(os.Getpid()), "-rss-after", "2500ms", "-settle", "30s", "-min-rate", "0")
	if err != nil {
		t.Fatalf("%v: %+v", err, rep.Check)
	}
	d := rep.Disconnect
	if d == nil || d.Departed != 37 || d.Survivors != 3 {
		t.Fatalf("disconnect = %+v, want 37 departed and 3 survivors", d)
	}
	if d.ReleasedAfterS == nil || *d.ReleasedAfterS <= 0 {
		t.Errorf("released after %v: want the server's listeners seen back at 3", d.ReleasedAfterS)
	}
	if h := d.Health; h == nil || !h.Available || h.MaxListeners < 40 {
		t.Errorf("health = %+v, want 40 listeners seen before the disconnect", h)
	}
	p := rep.Result
	if p.Listeners != (phaseListeners{Owed: 3, Connected: 3, Departed: 37}) {
		t.Errorf("listeners = %+v", p.Listeners)
	}
	if p.Deliveries.Lost != 0 || p.Deliveries.Expected != 3*p.Posts.Accepted {
		t.Errorf("deliveries = %+v, want every one of %d accepted to each survivor", p.Deliveries, p.Posts.Accepted)
	}
	if p.DepartedLatency == nil || p.DepartedLatency.Count == 0 {
		t.Errorf("departed latency = %+v, want what they received before leaving", p.DepartedLatency)
	}
	// One window before the disconnect, four after it (2 s of publishing
	// left in 500 ms windows), each after it with an RSS sample; their
	// deliveries are within what the survivors received.
	if len(d.Windows) != 5 || d.Windows[0].FromS != -0.5 || d.Windows[1].FromS != 0 || d.Windows[4].ToS != 2 {
		t.Fatalf("windows = %+v", d.Windows)
	}
	var inWindows uint64
	for i, w := range d.Windows {
		inWindows += w.Latency.Count
		if i > 0 && w.RSSKB <= 0 {
			t.Errorf("window %d = %+v, want an RSS sample", i, w)
		}
	}
	if inWindows == 0 || inWindows > p.Deliveries.Delivered {
		t.Errorf("%d deliveries in windows, more than the %d the survivors received", inWindows, p.Deliveries.Delivered)
	}
	if len(d.RSS) != 1 || d.RSS[0].AfterS != 2.5 || d.RSS[0].RSSKB <= 0 {
		t.Errorf("rss = %+v, want one sample 2.5 s after", d.RSS)
	}
}

// Replicas that do not share their events (two independent servers): a
// listener on one never sees what the other accepted, and that is loss,
// per replica and in total. The same server named twice loses nothing.
func TestReplicasOweEveryEvent(t *testing.T) {
	a, b := startDispatcher(t, broadcast.Options{}), startDispatcher(t, broadcast.Options{})
	rep, err := runJSON(t, guard(t), "-url", a.URL+","+b.URL, "-listeners", "4", "-publishers", "2", "-events", "100")
	if err == nil {
		t.Fatal("two islands passed the check")
	}
	p := rep.Result
	if len(p.Replicas) != 2 || p.Replicas[0].URL != a.URL || p.Replicas[1].URL != b.URL {
		t.Fatalf("replicas = %+v", p.Replicas)
	}
	ha, _ := a.Health(t)
	hb, _ := b.Health(t)
	accA, accB := p.Replicas[0].Posts.Accepted, p.Replicas[1].Posts.Accepted
	if accA != ha.EventsAccepted || accB != hb.EventsAccepted || accA+accB != 100 {
		t.Fatalf("accepted per replica %d + %d, the servers say %d + %d", accA, accB, ha.EventsAccepted, hb.EventsAccepted)
	}
	// Listeners 0 and 2 are on a, 1 and 3 on b.
	d := p.Deliveries
	if d.Expected != 400 || d.Delivered != 2*accA+2*accB || d.Lost != 200 {
		t.Errorf("deliveries = %+v, want 200 of 400", d)
	}
	for i, acc := range []uint64{accB, accA} { // each replica's listeners miss the other's events
		r := p.Replicas[i]
		if r.Listeners.Owed != 2 || r.Deliveries.Expected != 200 || r.Deliveries.Lost != 2*acc {
			t.Errorf("replica %d: listeners %+v, deliveries %+v, want %d lost", i, r.Listeners, r.Deliveries, 2*acc)
		}
	}
	if !strings.Contains(strings.Join(rep.Check.Failures, ";"), "loss 50.000%") {
		t.Errorf("check = %+v", rep.Check)
	}

	rep, err = runJSON(t, guard(t), "-url", a.URL, "-url", a.URL, "-listeners", "4", "-publishers", "2", "-events", "100", "-settle", "30s")
	if err != nil || rep.Result.Deliveries.Delivered != 400 || len(rep.Result.Replicas) != 2 || rep.Result.Replicas[1].Deliveries.Delivered != 200 {
		t.Errorf("one server named twice: %v, %+v", err, rep.Result)
	}
}

// Listeners the server ends before the mass disconnect are lost, not
// departed: a server that drops everyone early must fail the run. The
// survivors are owed every event, the others those taken before the
// disconnect.
func TestDisconnectAfterServerDroppedEveryone(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{MaxStreamDuration: 300 * time.Millisecond})
	const n, survivors = 10, 3
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-scenario", "disconnect", "-listeners", fmt.Sprint(n),
		"-survivors", fmt.Sprint(survivors), "-publishers", "8", "-rate", "100", "-duration", "2s", "-warmup", "1s", "-settle", "1s")
	if err == nil || rep.Check.Pass {
		t.Fatalf("a disconnect run whose listeners the server had all ended passed: %+v", rep.Check)
	}
	if d := rep.Disconnect; d == nil || d.Departed != 0 || d.Survivors != 0 {
		t.Errorf("disconnect = %+v, want nobody departed and no survivor", d)
	}
	p := rep.Result
	if p.Listeners != (phaseListeners{Owed: n, Lost: n}) || rep.Check.FailedListeners != n {
		t.Errorf("listeners = %+v, check %+v: want all %d owed and lost", p.Listeners, rep.Check, n)
	}
	d := p.Deliveries
	acc := p.Posts.Accepted
	if d.Expected <= survivors*acc || d.Expected >= n*acc || d.Lost != d.Expected-d.Delivered || d.Lost < survivors*acc/2 {
		t.Errorf("deliveries = %+v with %d accepted: want the survivors owed all, the others those before the disconnect", d, acc)
	}
}

// The progress line of a storm: a listener that joined while POSTs were
// in flight is owed only the events taken after its first line, and
// shows 100 % once it has them all, not 100 % less the in-flight ones.
func TestProgressShareOfLateListener(t *testing.T) {
	ph := &phase{limit: 1000, publishers: 1, hists: []*shardedHistogram{newShardedHistogram(1)}}
	for k := range uint64(30) {
		ph.accepted.add(k)
	}
	l := &listener{done: make(chan struct{})}
	l.startPhase(ph, 40) // 30 accepted, 40 taken: 10 in flight
	for k := range uint64(100) {
		if k >= 30 {
			ph.accepted.add(k)
		}
		if k >= 40 {
			l.deliver(fmt.Appendf(nil, `{"lt_seq":%d,"lt_pub":0,"lt_sent_ns":1}`, k), 2)
		}
	}
	got, want, lost := deliveredShare(ph, []*listener{l})
	if got != 60 || want != 60 || lost != 0 {
		t.Errorf("got %d of %d (%d lost), want all 60 owed received", got, want, lost)
	}
}
