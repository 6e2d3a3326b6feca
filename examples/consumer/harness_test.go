package consumer_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/fixtures"
	"event-dispatcher/pkg/server"
)

// serverLog counts what the service logs: listeners it connected and
// streams it refused, so a test knows a client really went through a
// reconnection or a refusal.
type serverLog struct {
	mu        sync.Mutex
	connected int
	refused   int
}

func (l *serverLog) Write(p []byte) (int, error) {
	var rec struct {
		Message string `json:"message"`
		Path    string `json:"path"`
		Status  int    `json:"status"`
	}
	if json.Unmarshal(p, &rec) == nil {
		l.mu.Lock()
		switch {
		case rec.Message == "listener connected":
			l.connected++
		case rec.Message == "request" && rec.Path == "/events" && rec.Status == 503:
			l.refused++
		}
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *serverLog) counts() (connected, refused int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected, l.refused
}

// start runs the dispatcher on loopback with hub options opts, logging at
// debug level (one line per request) into the returned serverLog.
func start(t *testing.T, opts broadcast.Options) (*ssetest.Server, *serverLog) {
	sl := &serverLog{}
	log := zerolog.New(sl).Level(zerolog.DebugLevel)
	opts.Logger = log
	return ssetest.Start(t, opts, server.Options{Logger: log}), sl
}

// client is what a test sees of one client under test: the data of each
// event it handed over, in order, as canonical JSON. events is closed if
// the client ends by itself; failed then says why.
type client struct {
	events chan string
	failed func() error
}

// next returns the next event's data, failing the test after guard.
func (c client) next(t *testing.T, guard time.Duration) string {
	t.Helper()
	select {
	case d, ok := <-c.events:
		if !ok {
			t.Fatalf("the client ended: %v", c.failed())
		}
		if d == "" {
			t.Fatal("the client handed over an event with empty data")
		}
		return d
	case <-time.After(guard):
		err := c.failed()
		t.Fatalf("no event within %s (client error: %v)", guard, err)
		return ""
	}
}

// publishUntilReceived publishes a numbered warm-up event every 50 ms until
// c hands over one published after the server had seen conns connections:
// the client is then subscribed on its conns-th connection or a later one,
// and receives every event published from then on.
func publishUntilReceived(t *testing.T, srv *ssetest.Server, sl *serverLog, c client, conns int) {
	t.Helper()
	deadline := time.After(90 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	firstAfter := -1 // the first warm-up published once conns connections were seen
	for n := 0; ; n++ {
		if connected, _ := sl.counts(); connected >= conns && firstAfter < 0 {
			firstAfter = n
		}
		srv.Publish(t, fmt.Appendf(nil, `{"warmup":%d}`, n))
		select {
		case <-tick.C:
		case <-deadline:
			connected, refused := sl.counts()
			t.Fatalf("no warm-up received from connection %d on (%d connections, %d refusals; client error: %v)", conns, connected, refused, c.failed())
		}
		for drained := false; !drained; {
			select {
			case d, open := <-c.events:
				if !open {
					t.Fatalf("the client ended: %v", c.failed())
				}
				w, ok := warmup(d)
				if !ok {
					t.Fatalf("unexpected event %q", d)
				}
				if firstAfter >= 0 && w >= firstAfter {
					return
				}
			default:
				drained = true
			}
		}
	}
}

// checkEveryFixture publishes every real player message, then one of the
// largest size the service accepts by default (MAX_BODY_BYTES, 64 KiB),
// and requires c to hand each over, in order.
func checkEveryFixture(t *testing.T, srv *ssetest.Server, c client) {
	t.Helper()
	var bodies [][]byte
	for _, name := range fixtures.Valid() {
		bodies = append(bodies, ssetest.Fixture(t, name))
	}
	const maxBody = 64 << 10
	pad := maxBody - len(`{"pad":""}`)
	bodies = append(bodies, []byte(`{"pad":"`+strings.Repeat("x", pad)+`"}`))
	var want []string
	for _, body := range bodies {
		srv.Publish(t, body)
		want = append(want, canonical(string(body)))
	}
	for i, w := range want {
		got := c.next(t, 30*time.Second)
		for _, ok := warmup(got); ok; _, ok = warmup(got) { // late warm-ups may still be in flight
			got = c.next(t, 30*time.Second)
		}
		if got = canonical(got); got != w {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got, w)
		}
	}
}

// warmup returns the number of a warm-up event, and false for any other
// data (an empty one included).
func warmup(d string) (int, bool) {
	var w struct{ Warmup *int }
	if json.Unmarshal([]byte(d), &w) != nil || w.Warmup == nil {
		return 0, false
	}
	return *w.Warmup, true
}

// canonical re-encodes a JSON text so that equal values compare equal
// whatever the client's JSON printer; invalid JSON is returned as it is.
func canonical(s string) string {
	var v any
	if json.Unmarshal([]byte(s), &v) != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// clientFor starts a client under test against url; it runs until the test
// ends.
type clientFor func(t *testing.T, url string) client

// checkEveryEvent: once connected, the client hands over every event, and
// never an empty one.
func checkEveryEvent(t *testing.T, run clientFor) {
	srv, sl := start(t, broadcast.Options{Heartbeat: 20 * time.Millisecond})
	c := run(t, srv.URL+"/events")
	publishUntilReceived(t, srv, sl, c, 1)
	checkEveryFixture(t, srv, c)
}

// checkServerEnds: after the server ends the stream (MAX_STREAM_DURATION
// here; a shutdown ends it the same way), the client connects again, and
// again.
func checkServerEnds(t *testing.T, run clientFor) {
	srv, sl := start(t, broadcast.Options{MaxStreamDuration: 300 * time.Millisecond})
	c := run(t, srv.URL+"/events")
	publishUntilReceived(t, srv, sl, c, 3)
}

// checkCapacity: refused with 503 over MAX_SUBSCRIBERS, the client keeps
// trying and gets every event once there is room.
func checkCapacity(t *testing.T, run clientFor) {
	srv, sl := start(t, broadcast.Options{MaxListeners: 1})
	blocker := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	c := run(t, srv.URL+"/events")
	ssetest.Eventually(t, 30*time.Second, "the client is refused", func() (bool, string) {
		_, refused := sl.counts()
		return refused > 0, "no refusal logged"
	})
	blocker.Close()
	publishUntilReceived(t, srv, sl, c, 2)
	checkEveryFixture(t, srv, c)
}

// checkScenarios runs every scenario above on clients started by run, in
// parallel.
func checkScenarios(t *testing.T, run clientFor) {
	for name, check := range map[string]func(*testing.T, clientFor){
		"every event": checkEveryEvent, "again after the server ends the stream": checkServerEnds,
		"again after a 503": checkCapacity,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			check(t, run)
		})
	}
}
