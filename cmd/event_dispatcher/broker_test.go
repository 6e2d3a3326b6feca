package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"event-dispatcher/internal/brokertest"
	"event-dispatcher/internal/ssetest"
)

// resumeWithin is a generous deadline for what the README promises within
// a few seconds (cross-replica delivery resuming after the broker's
// return): on a loaded machine the tests check that it happens, not how
// fast.
const resumeWithin = 30 * time.Second

// replica is one in-process instance of the service, through run.
type replica struct {
	base  string // the service
	admin string // its operators' port: /metrics
	logs  *logSink
}

// startReplicas runs n instances in this process with the same
// environment (PORT=0 plus env), each on its own loopback port. Sharing the
// process lets the race detector see every replica; they share nothing
// else. They are stopped at cleanup.
func startReplicas(t *testing.T, n int, env ...string) []*replica {
	t.Helper()
	for _, name := range envNames() {
		t.Setenv(name, "")
	}
	// ADMIN_PORT=0: each replica's operators' port on a free port of its own.
	// MAX_FANOUT_LAG=1m: a loaded machine's lag must not refuse POSTs
	// (503) in tests that count every event.
	for _, kv := range append([]string{"PORT=0", "ADMIN_PORT=0", "CLIENT_IP_FIELD=user_ip", "SUBSCRIBER_BUFFER_BYTES=33554432", "MAX_FANOUT_LAG=1m"}, env...) {
		name, value, _ := strings.Cut(kv, "=")
		t.Setenv(name, value)
	}
	unsetEmpty(t)
	out := make([]*replica, n)
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		logs, stderr := newLogSink(), newLogSink()
		ready, gone := make(chan string, 1), make(chan struct{})
		var runErr error
		go func() {
			defer close(gone)
			runErr = run(ctx, nil, logs, stderr, ready)
		}()
		t.Cleanup(func() {
			cancel()
			select {
			case <-gone:
				if runErr != nil {
					t.Errorf("replica %d: %v", i, runErr)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("replica %d did not stop", i)
			}
		})
		select {
		case addr := <-ready:
			rec := logs.waitFor(t, "event dispatcher listening", gone, 10*time.Second)
			out[i] = &replica{base: baseURL(t, addr), admin: baseURL(t, rec["admin_addr"]), logs: logs}
		case <-gone:
			t.Fatalf("replica %d ended before listening: %v\n%s", i, runErr, stderr)
		case <-time.After(30 * time.Second):
			t.Fatalf("replica %d not listening", i)
		}
	}
	return out
}

type brokerHealth struct {
	Status        string `json:"status"`
	Broker        string `json:"broker"`
	Sent          uint64 `json:"broker_sent"`
	Received      uint64 `json:"broker_received"`
	DroppedDown   uint64 `json:"broker_dropped_down"`
	DroppedBusy   uint64 `json:"broker_dropped_busy"`
	PublishErrors uint64 `json:"broker_publish_errors"`
	Reconnects    uint64 `json:"broker_reconnects"`
}

func (r *replica) health(t *testing.T) (brokerHealth, int) {
	t.Helper()
	resp, err := http.Get(r.base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h brokerHealth
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h, resp.StatusCode
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func waitBroker(t *testing.T, replicas []*replica, state string, within time.Duration) {
	t.Helper()
	for i, r := range replicas {
		ssetest.Eventually(t, within, fmt.Sprintf("replica %d broker %s", i, state), func() (bool, string) {
			h, code := r.health(t)
			return h.Broker == state && code == http.StatusOK, fmt.Sprintf("%d %+v", code, h)
		})
	}
}

// collector reads one listener's stream in the background and keeps every
// data line.
type collector struct {
	stream *ssetest.Stream
	mu     sync.Mutex
	data   []string
}

func collect(t *testing.T, client *http.Client, base string) *collector {
	s := ssetest.Subscribe(t, client, base+"/events", nil)
	c := &collector{stream: s}
	go func() {
		for {
			e, err := s.Next(context.Background())
			if err != nil {
				return
			}
			c.mu.Lock()
			c.data = append(c.data, e.Data...)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *collector) lines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.data)
}

// source of an event: the replica it was posted to, its publisher there,
// and its sequence number.
type source struct{ replica, publisher int }

// body is what publisher p of replica r sends as event seq: pretty-printed,
// with a user_ip of its own that CLIENT_IP_FIELD must replace.
func body(r, p, seq int) []byte {
	return fmt.Appendf(nil, "{\n  \"r\": %d, \"p\": %d, \"seq\": %d,\n  \"user_ip\": \"6.6.6.6\",\n  \"data\": { \"t\": \"caf\u00e9 \\\"%d\\\"\", \"n\": 1.50 }\n}\n", r, p, seq, seq)
}

// want is the data line every listener of every replica must receive for
// body(r, p, seq): compact, the client IP set once by the replica that
// accepted it.
func want(r, p, seq int) string {
	return fmt.Sprintf(`{"r":%d,"p":%d,"seq":%d,"data":{"t":"café \"%d\"","n":1.50},"user_ip":"127.0.0.1"}`, r, p, seq, seq)
}

func parse(t *testing.T, line string) (source, int) {
	t.Helper()
	var s source
	var seq int
	if _, err := fmt.Sscanf(line, `{"r":%d,"p":%d,"seq":%d`, &s.replica, &s.publisher, &seq); err != nil {
		t.Fatalf("unexpected data line %q", line)
	}
	if line != want(s.replica, s.publisher, seq) {
		t.Fatalf("data line %q, want %q", line, want(s.replica, s.publisher, seq))
	}
	return s, seq
}

func postEvent(client *http.Client, base string, r, p, seq int) (int, error) {
	resp, err := client.Post(base+"/api/events", "text/plain;charset=UTF-8", strings.NewReader(string(body(r, p, seq))))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func eachBroker(t *testing.T, test func(t *testing.T, srv *brokertest.Server)) {
	t.Run("redis", func(t *testing.T) { test(t, brokertest.Redis(t)) })
	t.Run("nats", func(t *testing.T) { test(t, brokertest.NATS(t, "")) })
}

// Three replicas, two listeners and two publishers on each: every listener
// gets every event exactly once, byte for byte, each publisher's events in
// the order it sent them.
func TestReplicasShareEveryEvent(t *testing.T) {
	eachBroker(t, func(t *testing.T, srv *brokertest.Server) {
		const replicas, listeners, publishers, perPublisher = 3, 2, 2, 100
		reps := startReplicas(t, replicas, "BROKER_URL="+srv.URL)
		waitBroker(t, reps, "connected", resumeWithin)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
		var cols []*collector
		for _, r := range reps {
			for range listeners {
				cols = append(cols, collect(t, client, r.base))
			}
		}
		var wg sync.WaitGroup
		for ri, r := range reps {
			for p := range publishers {
				wg.Go(func() {
					for seq := range perPublisher {
						if code, err := postEvent(client, r.base, ri, p, seq); code != http.StatusNoContent {
							t.Errorf("POST to replica %d: %d %v", ri, code, err)
							return
						}
					}
				})
			}
		}
		wg.Wait()
		total := replicas * publishers * perPublisher
		for i, c := range cols {
			ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("listener %d receives %d events", i, total), func() (bool, string) {
				n := len(c.lines())
				return n >= total, fmt.Sprint(n)
			})
		}
		// A second marker round trip through every replica: anything
		// duplicated would have arrived before it.
		for ri, r := range reps {
			if code, err := postEvent(client, r.base, ri, publishers, 0); code != http.StatusNoContent {
				t.Fatalf("marker: %d %v", code, err)
			}
		}
		for i, c := range cols {
			ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("listener %d markers", i), func() (bool, string) {
				n := len(c.lines())
				return n >= total+replicas, fmt.Sprint(n)
			})
			next := map[source]int{}
			for _, line := range c.lines() {
				src, seq := parse(t, line)
				if seq != next[src] {
					t.Fatalf("listener %d: from %+v got seq %d, want %d (lost, duplicated or reordered)", i, src, seq, next[src])
				}
				next[src] = seq + 1
			}
			if n := len(c.lines()); n != total+replicas {
				t.Errorf("listener %d received %d events, want %d", i, n, total+replicas)
			}
		}
		for i, r := range reps {
			h, _ := r.health(t)
			sent, recv := uint64(publishers*perPublisher+1), uint64((replicas-1)*(publishers*perPublisher+1))
			if h.Broker != "connected" || h.Sent != sent || h.Received != recv || h.DroppedBusy+h.DroppedDown+h.PublishErrors != 0 {
				t.Errorf("replica %d health %+v; want sent %d, received %d, nothing dropped", i, h, sent, recv)
			}
			metrics := get(t, r.admin+"/metrics")
			for _, want := range []string{
				"\nevent_dispatcher_broker_connected 1\n",
				fmt.Sprintf("\nevent_dispatcher_broker_messages_received_total %d\n", recv),
				"\nevent_dispatcher_broker_publish_errors_total 0\n",
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("replica %d /metrics lacks %q", i, strings.TrimSpace(want))
				}
			}
		}
	})
}

// The broker is killed while every replica is publishing, and restarted on
// the same port: POSTs stay 204, local listeners keep receiving local
// events without a gap, cross-replica delivery resumes within 10 s of the
// restart, nothing is delivered twice, and goroutines return to where they
// were.
func TestReplicasSurviveBrokerRestart(t *testing.T) {
	eachBroker(t, func(t *testing.T, srv *brokertest.Server) {
		const replicas = 3
		reps := startReplicas(t, replicas, "BROKER_URL="+srv.URL)
		waitBroker(t, reps, "connected", resumeWithin)
		tr := &http.Transport{MaxIdleConnsPerHost: 16}
		client := &http.Client{Transport: tr}
		baseline := runtime.NumGoroutine()

		streams := make([]*collector, replicas)
		for i, r := range reps {
			streams[i] = collect(t, client, r.base)
		}
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var posted [replicas]atomic.Int64 // accepted so far, per replica (one publisher each)
		for ri, r := range reps {
			wg.Go(func() {
				for seq := 0; ctx.Err() == nil; seq++ {
					code, err := postEvent(client, r.base, ri, 0, seq)
					if code != http.StatusNoContent {
						t.Errorf("replica %d: POST %d: %d %v", ri, seq, code, err)
						return
					}
					posted[ri].Store(int64(seq + 1))
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
		ssetest.Eventually(t, resumeWithin, "events flowing", func() (bool, string) { return posted[2].Load() > 20, "" })
		srv.Kill()
		waitBroker(t, reps, "down", resumeWithin)
		mark := [replicas]int64{}
		for i := range reps {
			mark[i] = posted[i].Load()
		}
		// Local delivery goes on while the broker is away.
		for i, c := range streams {
			ssetest.Eventually(t, resumeWithin, fmt.Sprintf("replica %d local events during the outage", i), func() (bool, string) {
				return lastFrom(t, c, source{i, 0}) >= int(mark[i])+10, ""
			})
		}
		srv.Start()
		restarted := [replicas]int64{}
		for i := range reps {
			restarted[i] = posted[i].Load()
		}
		// Each replica receives, within the bound, an event another replica
		// accepted after the broker came back.
		for i, c := range streams {
			other := (i + 1) % replicas
			ssetest.Eventually(t, resumeWithin, fmt.Sprintf("replica %d receives replica %d's events again", i, other), func() (bool, string) {
				return lastFrom(t, c, source{other, 0}) >= int(restarted[other]), ""
			})
		}
		stop()
		wg.Wait()
		final := [replicas]int{}
		for i := range reps {
			final[i] = int(posted[i].Load())
		}
		for i, c := range streams {
			ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("replica %d receives the last events", i), func() (bool, string) {
				for j := range reps {
					if lastFrom(t, c, source{j, 0}) < final[j]-1 {
						return false, fmt.Sprintf("from %d: %d of %d", j, lastFrom(t, c, source{j, 0}), final[j])
					}
				}
				return true, ""
			})
			next := map[source]int{}
			for _, line := range c.lines() {
				src, seq := parse(t, line)
				switch {
				case seq < next[src]:
					t.Fatalf("replica %d: from %+v seq %d after %d: duplicate or reordered", i, src, seq, next[src]-1)
				case src.replica == i && seq != next[src]:
					t.Fatalf("replica %d: own event %d missing locally (got %d)", i, next[src], seq)
				}
				next[src] = seq + 1
			}
		}
		for i, r := range reps {
			h, code := r.health(t)
			if code != http.StatusOK || h.Reconnects < 1 || h.DroppedDown == 0 {
				t.Errorf("replica %d health %d %+v: want 200, a reconnect, events counted as dropped while down", i, code, h)
			}
			// One outage, one warning, whichever noticed it first (the
			// connection lost, an attempt to connect, an event not sent),
			// saying what it means.
			logs := r.logs.String()
			if n := strings.Count(logs, `"level":"warn","broker":`); n != 1 || strings.Count(logs, "events are delivered to this replica's listeners only and not sent to the others (counted in broker_dropped_down) until it is back") != 1 {
				t.Errorf("replica %d logged %d warnings, want one for the outage:\n%s", i, n, logs)
			}
		}
		for _, c := range streams {
			c.stream.Close()
		}
		ssetest.Eventually(t, resumeWithin, "goroutines back to the baseline", func() (bool, string) {
			tr.CloseIdleConnections()
			n := runtime.NumGoroutine()
			return n <= baseline, fmt.Sprintf("%d, baseline %d", n, baseline)
		})
	})
}

// lastFrom is the highest sequence number c received from src, or -1.
func lastFrom(t *testing.T, c *collector, src source) int {
	last := -1
	for _, line := range c.lines() {
		if s, seq := parse(t, line); s == src {
			last = max(last, seq)
		}
	}
	return last
}

// A replica whose broker is unreachable at start still starts, answers
// /health 200 and delivers locally, and links up once the broker appears.
func TestReplicaStartsWithBrokerDown(t *testing.T) {
	srv := brokertest.Redis(t)
	srv.Kill()
	reps := startReplicas(t, 2, "BROKER_URL="+srv.URL)
	waitBroker(t, reps, "down", resumeWithin)
	client := &http.Client{}
	local, remote := collect(t, client, reps[0].base), collect(t, client, reps[1].base)
	if code, err := postEvent(client, reps[0].base, 0, 0, 0); code != http.StatusNoContent {
		t.Fatalf("POST while the broker is down: %d %v", code, err)
	}
	ssetest.Eventually(t, resumeWithin, "local delivery", func() (bool, string) { return lastFrom(t, local, source{0, 0}) == 0, "" })
	srv.Start()
	waitBroker(t, reps, "connected", resumeWithin)
	if code, err := postEvent(client, reps[0].base, 0, 0, 1); code != http.StatusNoContent {
		t.Fatalf("POST: %d %v", code, err)
	}
	ssetest.Eventually(t, resumeWithin, "cross-replica delivery", func() (bool, string) { return lastFrom(t, remote, source{0, 0}) == 1, "" })
	if got := remote.lines(); len(got) != 1 {
		t.Errorf("remote listener got %q: the event accepted while the broker was down must not be sent later", got)
	}
	// The start-up line names the replica's origin, as its broker lines
	// do; the outage is one warning; no Redis line shows a max_payload.
	for i, r := range reps {
		logs := r.logs.String()
		origin, _ := r.logs.records("event dispatcher listening")[0]["origin"].(string)
		if len(origin) != 16 || strings.Count(logs, `"origin":"`+origin+`"`) < 3 {
			t.Errorf("replica %d: start-up origin %q, not on its broker lines:\n%s", i, origin, logs)
		}
		if n := strings.Count(logs, `"level":"warn","broker":`); n != 1 || !strings.Contains(logs, "cannot reach the broker; retrying: events are delivered to this replica's listeners only") {
			t.Errorf("replica %d: %d warnings, want one for the outage:\n%s", i, n, logs)
		}
		if strings.Contains(logs, "max_payload") {
			t.Errorf("replica %d: a max_payload Redis does not have:\n%s", i, logs)
		}
	}
}

// A BROKER_URL or BROKER_CHANNEL that cannot work stops the program before
// it listens, naming the variable and never printing the password.
func TestBadBrokerConfigExitsBeforeListening(t *testing.T) {
	cases := []struct{ name, env, want string }{
		{"scheme", "BROKER_URL=http://cache:6379", "BROKER_URL"},
		{"no scheme", "BROKER_URL=cache:6379", "BROKER_URL"},
		{"redis db", "BROKER_URL=redis://user:s3cret@cache:6379/db", "BROKER_URL"},
		{"nats list", "BROKER_URL=nats://user:s3cret@a:4222,redis://b:6379", "BROKER_URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t, nil, "PORT=0", tc.env)
			if code := p.exit(t, 30*time.Second); code == 0 {
				t.Error("exit code 0, want non-zero")
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "s3cret") {
				t.Errorf("stderr must name %s and hide the password:\n%s", tc.want, stderr)
			}
			if out := strings.TrimSpace(p.stdout.String()); out != "" {
				t.Errorf("started before failing: %s", out)
			}
		})
	}
	p := startProcess(t, nil, "PORT=0", "BROKER_URL=nats://127.0.0.1:1", "BROKER_CHANNEL=events.*")
	if code := p.exit(t, 30*time.Second); code == 0 || !strings.Contains(p.stderr.String(), "BROKER_CHANNEL") {
		t.Errorf("wildcard NATS subject: exit %d, stderr %s", code, p.stderr)
	}
}

// What the relay refuses from the channel is counted in the metrics: an
// event in this service's envelope that ingest would refuse (invalid
// UTF-8) as invalid, a message this service did not write as foreign.
func TestRelayRefusalsCounted(t *testing.T) {
	srv := brokertest.Redis(t)
	r := startReplicas(t, 1, "BROKER_URL="+srv.URL)[0]
	ssetest.Eventually(t, 30*time.Second, "the broker link is up", func() (bool, string) {
		h, _ := r.health(t)
		return h.Broker == "connected", h.Broker
	})
	opts, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	for _, m := range []string{"ed1 0123456789abcdef e {\"a\":\"\xff\"}", "not ours"} {
		if err := c.Publish(context.Background(), "event-dispatcher", m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ssetest.Eventually(t, 30*time.Second, "both counted", func() (bool, string) {
		m := ssetest.Scrape(t, r.admin+"/metrics").Samples
		invalid := m[`event_dispatcher_broker_messages_dropped_total{reason="invalid"}`]
		foreign := m[`event_dispatcher_broker_messages_dropped_total{reason="foreign"}`]
		return invalid == 1 && foreign == 1, fmt.Sprintf("invalid %v, foreign %v", invalid, foreign)
	})
}
