package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
)

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T) string {
	t.Helper()
	// Below the usual ephemeral range (32768-60999): the test restarts a
	// server on this port, and a port from that range can meanwhile become
	// the source port of some outgoing connection, refusing the restart.
	for range 100 {
		port := strconv.Itoa(20000 + rand.IntN(12000))
		ln, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// dispatcher is a running dispatcher binary.
type dispatcher struct {
	cmd    *exec.Cmd
	exited chan struct{}
	stderr *bytes.Buffer // guarded by being read only after exited
}

// kill stops the process with SIGKILL and waits until it is gone, so its
// port is free again.
func (d *dispatcher) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-d.exited
}

// startBinary runs the built dispatcher on port, with env ("NAME=value")
// added, and waits until /health answers. The process is killed at cleanup
// if still running.
func startBinary(t *testing.T, port string, env ...string) *dispatcher {
	t.Helper()
	d := &dispatcher{cmd: exec.Command(dispatcherBinary), exited: make(chan struct{}), stderr: &bytes.Buffer{}}
	// MAX_FANOUT_LAG=1m: a loaded machine's lag must not refuse POSTs.
	d.cmd.Env = append(append(os.Environ(), "PORT="+port, "ADMIN_PORT=0", "LOG_LEVEL=warn", "MAX_FANOUT_LAG=1m"), env...)
	d.cmd.Stdout, d.cmd.Stderr = io.Discard, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		<-d.exited
	})
	ssetest.Eventually(t, 30*time.Second, "the dispatcher answers /health", func() (bool, string) {
		select {
		case <-d.exited:
			return false, "it exited: " + d.stderr.String()
		default:
		}
		h, err := health("http://127.0.0.1:" + port)
		return err == nil, fmt.Sprintf("%+v %v", h, err)
	})
	return d
}

// health reads a server's /health.
func health(base string) (ssetest.Health, error) {
	var h ssetest.Health
	resp, err := http.Get(base + "/health")
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// A server killed mid-run (SIGKILL) and started again on the same port:
// the listeners are gone, the new process accepts events nobody receives.
// The run must fail and count every one of those events as lost for every
// listener, besides the dropped listeners and the refused POSTs.
func TestServerKilledMidRunIsLoss(t *testing.T) {
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	first := startBinary(t, port)
	const listeners = 20
	type result struct {
		rep report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := runJSON(t, guard(t), "-url", base, "-listeners", fmt.Sprint(listeners), "-publishers", "2",
			"-rate", "200", "-duration", "4s", "-settle", "2s")
		done <- result{rep, err}
	}()
	// Kill once events flow: the load tool's listeners are all connected.
	ssetest.Eventually(t, time.Minute, "events accepted", func() (bool, string) {
		h, err := health(base)
		return err == nil && h.Listeners == listeners && h.EventsAccepted > 50, fmt.Sprintf("%+v %v", h, err)
	})
	first.kill(t) // and wait until its port is free
	startBinary(t, port)
	r := <-done
	// Everything the second process accepted was owed to every listener.
	h, err := health(base)
	if err != nil {
		t.Fatal(err)
	}
	afterRestart := h.EventsAccepted
	if afterRestart == 0 {
		t.Fatal("the restarted server accepted nothing: the test proves nothing")
	}
	if r.err == nil || r.rep.Check.Pass {
		t.Fatalf("a run across a killed server passed: %+v", r.rep.Check)
	}
	p := r.rep.Result
	if p.Listeners.Lost != listeners || p.Listeners.Owed != listeners {
		t.Errorf("listeners = %+v, want all %d owed and lost", p.Listeners, listeners)
	}
	d := p.Deliveries
	if d.Expected != p.Posts.Accepted*listeners || d.Lost < afterRestart*listeners || d.Lost != d.Expected-d.Delivered {
		t.Errorf("deliveries = %+v with %d accepted, %d of them by the restarted server: want each lost by all %d listeners",
			d, p.Posts.Accepted, afterRestart, listeners)
	}
	why := strings.Join(r.rep.Check.Failures, "; ")
	for _, want := range []string{"loss", "failed listeners"} {
		if !strings.Contains(why, want) {
			t.Errorf("check failures %q do not name %q", why, want)
		}
	}
}

// A server killed and not restarted: POSTs are refused from then on, the
// listeners are dropped; the run fails and says so.
func TestServerKilledFails(t *testing.T) {
	port := freePort(t)
	base := "http://127.0.0.1:" + port
	srv := startBinary(t, port)
	done := make(chan report, 1)
	go func() {
		rep, _ := runJSON(t, guard(t), "-url", base, "-listeners", "5", "-publishers", "2", "-rate", "100", "-duration", "3s", "-settle", "1s")
		done <- rep
	}()
	ssetest.Eventually(t, time.Minute, "events accepted", func() (bool, string) {
		h, err := health(base)
		return err == nil && h.Listeners == 5 && h.EventsAccepted > 10, fmt.Sprintf("%+v %v", h, err)
	})
	srv.kill(t)
	rep := <-done
	p := rep.Result
	if rep.Check.Pass || p.Listeners.Lost != 5 || p.Posts.TransportErrors == 0 || p.Posts.ErrorsByKind["connection refused"] == 0 {
		t.Errorf("check %+v, listeners %+v, posts %+v: want a failure with 5 lost listeners and refused POSTs", rep.Check, p.Listeners, p.Posts)
	}
}

// A clean run exits 0 through the real binary too.
func TestCleanRunPasses(t *testing.T) {
	port := freePort(t)
	startBinary(t, port)
	rep, err := runJSON(t, guard(t), "-url", "http://127.0.0.1:"+port, "-listeners", "10", "-publishers", "2", "-events", "200", "-settle", "30s")
	if err != nil || rep.Result.Deliveries.Delivered != 2000 || rep.Result.Deliveries.Lost != 0 {
		t.Fatalf("err %v, deliveries %+v", err, rep.Result.Deliveries)
	}
}

// Nothing listening: every listener is refused, nothing is published, the
// run fails.
func TestRefusedConnectionsFail(t *testing.T) {
	rep, err := runJSON(t, guard(t), "-url", "http://127.0.0.1:"+freePort(t), "-listeners", "3")
	if err == nil || rep.Connect.Failed != 3 || rep.Connect.FailedBy["connection refused"] != 3 || rep.Skipped == "" {
		t.Fatalf("err %v, connect %+v, skipped %q: want 3 refused and a failure", err, rep.Connect, rep.Skipped)
	}
	if rep.Check.FailedListeners != 3 || rep.Check.FailedListenPct != 100 {
		t.Errorf("check = %+v", rep.Check)
	}
}

// A listener answered 503 (over MAX_SUBSCRIBERS) fails the run even though
// the others received everything; -max-loss can tolerate it.
func TestRejectedListenerFails(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{MaxListeners: 2})
	for maxLoss, pass := range map[string]bool{"0": false, "40": true} {
		ssetest.Eventually(t, time.Minute, "the previous run's listeners gone", func() (bool, string) {
			h, _ := ts.Health(t)
			return h.Listeners == 0, fmt.Sprint(h.Listeners)
		})
		rep, _ := runJSON(t, guard(t), "-url", ts.URL, "-listeners", "3", "-publishers", "1", "-events", "50", "-max-loss", maxLoss, "-settle", "30s")
		if rep.Result == nil {
			t.Fatalf("-max-loss %s: nothing published: %+v", maxLoss, rep)
		}
		if rep.Connect.FailedBy["HTTP 503"] != 1 || rep.Result.Deliveries.Lost != 0 || rep.Result.Deliveries.Delivered != 100 {
			t.Errorf("-max-loss %s: connect %+v, deliveries %+v: want one 503 and no loss for the other two",
				maxLoss, rep.Connect, rep.Result.Deliveries)
		}
		if rep.Check.Pass != pass {
			t.Errorf("-max-loss %s: check = %+v, want pass=%v", maxLoss, rep.Check, pass)
		}
	}
}

// Non-2xx answers to POSTs (a wrong path: 404 from the real server) are
// failures, not silently fewer events.
func TestRejectedPostsFail(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	rep, err := runJSON(t, guard(t), "-url", ts.URL, "-ingest-path", "/nope", "-listeners", "1", "-publishers", "1", "-events", "5")
	if err == nil || rep.Result.Posts.ByStatus["404"] != 5 || rep.Check.FailedPostsPct != 100 {
		t.Fatalf("err %v, posts %+v, check %+v: want 5 x 404 and a failure", err, rep.Result.Posts, rep.Check)
	}
}

func TestSuffixCounter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		var acc, seen seqSet
		n := uint64(r.IntN(500))
		for i := range n {
			if r.IntN(3) > 0 {
				acc.add(i)
			}
			if r.IntN(2) > 0 {
				seen.add(i)
			}
		}
		c := newSuffixCounter(acc.words)
		for from := range n + 70 {
			var wantOwed, wantIn, wantOut uint64
			for i := from; i < n+64; i++ {
				a, s := has(acc, i), has(seen, i)
				if a {
					wantOwed++
				}
				if s && a {
					wantIn++
				}
				if s && !a {
					wantOut++
				}
			}
			in, out := seen.countIn(acc.words, from)
			if got := c.from(from); got != wantOwed || in != wantIn || out != wantOut {
				t.Fatalf("from %d: owed %d in %d out %d, want %d %d %d", from, got, in, out, wantOwed, wantIn, wantOut)
			}
		}
	}
}

func has(s seqSet, i uint64) bool {
	return int(i/64) < len(s.words) && s.words[i/64]&(1<<(i%64)) != 0
}

// The settings come before anything else, progress lines follow off a
// terminal, and with -json they go to stderr so stdout is one object.
func TestSettingsAndProgress(t *testing.T) {
	ts := startDispatcher(t, broadcast.Options{})
	args := []string{"-url", ts.URL, "-listeners", "2", "-publishers", "4", "-rate", "50", "-duration", "1500ms", "-progress", "100ms",
		"-settle", "30s", "-min-rate", "0"} // a pass whatever the machine's speed
	var out, errOut strings.Builder
	if err := runMain(guard(t), args, &out, &errOut, terminals{}); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	text := out.String()
	iTarget, iProgress, iDelivered := strings.Index(text, "target "), strings.Index(text, "\nprogress "), strings.Index(text, "\ndelivered ")
	if iTarget != 0 || iProgress < 0 || iDelivered < iProgress || strings.Contains(text, "\r") {
		t.Errorf("want settings, then progress lines, then the report, no carriage return:\n%s", text)
	}
	if !strings.Contains(text, "POST /api/events, GET /events") || !strings.Contains(text, ": PASS") {
		t.Errorf("default paths or verdict missing:\n%s", text)
	}
	out.Reset()
	errOut.Reset()
	if err := runMain(guard(t), append(args, "-json"), &out, &errOut, terminals{}); err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, out.String())
	}
	if e := errOut.String(); !strings.HasPrefix(e, "target ") || !strings.Contains(e, "\nprogress ") {
		t.Errorf("stderr lacks the settings or the progress:\n%s", e)
	}
}
