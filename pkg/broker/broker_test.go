package broker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"event-dispatcher/internal/brokertest"
)

// within is a generous deadline for what should take a few seconds at
// most (a reconnect, delivery resuming): on a loaded machine the tests
// check that it happens, not how fast.
const within = 30 * time.Second

// inbox collects what a Broker hands to its handler. block, while set,
// holds the handler (a replica that stopped reading the broker).
type inbox struct {
	mu    sync.Mutex
	got   [][]byte
	block chan struct{}
}

func (in *inbox) handle(data []byte) error {
	in.mu.Lock()
	blk := in.block
	in.mu.Unlock()
	if blk != nil {
		<-blk
	}
	in.mu.Lock()
	in.got = append(in.got, bytes.Clone(data))
	in.mu.Unlock()
	return nil
}

func (in *inbox) all() [][]byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.got)
}

func (in *inbox) has(data []byte) bool {
	return slices.ContainsFunc(in.all(), func(b []byte) bool { return bytes.Equal(b, data) })
}

type node struct {
	*Broker
	in   *inbox
	logs *brokertest.Log
}

// start runs a Broker on url with short probe periods, closed at cleanup.
func start(t *testing.T, url string, tune func(*Options)) node {
	t.Helper()
	in, logs := &inbox{}, &brokertest.Log{}
	opts := Options{
		URL: url, Channel: "test-" + strings.ReplaceAll(t.Name(), "/", "."), Handler: in.handle,
		Logger: zerolog.New(logs), MaxEventBytes: 64 << 10,
		// A probe late by 3 s on a loaded CI machine would reconnect and lose
		// events: the timeout stays well above scheduling delays.
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 3 * time.Second, MaxBackoff: 500 * time.Millisecond,
	}
	if tune != nil {
		tune(&opts)
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		in.mu.Lock()
		if in.block != nil {
			close(in.block)
			in.block = nil
		}
		in.mu.Unlock()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return node{b, in, logs}
}

// eventually waits for cond, failing the test after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func connected(n node) func() bool { return func() bool { return n.Stats().State == Connected } }

// brokers runs a test against a real Redis and a real NATS server.
func brokers(t *testing.T, test func(t *testing.T, srv *brokertest.Server)) {
	t.Run("redis", func(t *testing.T) { test(t, brokertest.Redis(t)) })
	t.Run("nats", func(t *testing.T) { test(t, brokertest.NATS(t, "")) })
}

func ev(replica, seq int) []byte {
	return fmt.Appendf(nil, `{"replica":%d,"seq":%d,"data":{"x":"\u00e9 \"q\""}}`, replica, seq)
}

// Three replicas publish concurrently: each receives every event of the two
// others exactly once, byte for byte and in each sender's order, and none of
// its own.
func TestThreeReplicasExactlyOnceInOrder(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		const perReplica = 300
		nodes := []node{start(t, srv.URL, nil), start(t, srv.URL, nil), start(t, srv.URL, nil)}
		for _, n := range nodes {
			eventually(t, within, "connected", connected(n))
		}
		var wg sync.WaitGroup
		for r, n := range nodes {
			wg.Go(func() {
				for i := range perReplica {
					n.Publish(ev(r, i))
				}
			})
		}
		wg.Wait()
		for r, n := range nodes {
			eventually(t, within, fmt.Sprintf("replica %d receives %d events", r, 2*perReplica), func() bool {
				return len(n.in.all()) >= 2*perReplica
			})
		}
		time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
		for r, n := range nodes {
			got := n.in.all()
			if len(got) != 2*perReplica {
				t.Errorf("replica %d received %d events, want %d", r, len(got), 2*perReplica)
			}
			next := map[int]int{}
			for _, g := range got {
				var from, seq int
				if _, err := fmt.Sscanf(string(g), `{"replica":%d,"seq":%d`, &from, &seq); err != nil {
					t.Fatalf("replica %d received %q", r, g)
				}
				if from == r {
					t.Errorf("replica %d received its own event %d back", r, seq)
				}
				if seq != next[from] {
					t.Errorf("replica %d: from %d got seq %d, want %d", r, from, seq, next[from])
				}
				next[from] = seq + 1
				if !bytes.Equal(g, ev(from, seq)) {
					t.Errorf("replica %d: bytes changed: %q", r, g)
				}
			}
			st := n.Stats()
			if st.Sent != perReplica || st.Received != 2*perReplica || st.PublishErrors+st.DroppedDown+st.Foreign != 0 {
				t.Errorf("replica %d stats %+v", r, st)
			}
		}
	})
}

// Broker down at start: the link keeps trying, counts what it could not
// send, and connects by itself once the broker appears.
func TestBrokerDownAtStart(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		srv.Kill()
		a, b := start(t, srv.URL, nil), start(t, srv.URL, nil)
		eventually(t, within, "state down", func() bool { return a.Stats().State == Down })
		a.Publish(ev(0, 0))
		a.Publish(ev(0, 1))
		if st := a.Stats(); st.DroppedDown != 2 {
			t.Errorf("dropped while down = %d, want 2", st.DroppedDown)
		}
		if n := a.logs.Count(`"level":"warn"`); n != 1 || a.logs.Count("cannot reach the broker; retrying: events are delivered to this replica's listeners only") != 1 {
			t.Errorf("logged %d warnings, want one for the outage, saying what it means:\n%s", n, a.logs)
		}
		srv.Start()
		eventually(t, within, "both connected after the broker started", func() bool { return connected(a)() && connected(b)() })
		a.Publish(ev(0, 2))
		eventually(t, within, "delivered", func() bool { return b.in.has(ev(0, 2)) })
		if got := b.in.all(); len(got) != 1 {
			t.Errorf("b received %q, want only the event sent while connected", got)
		}
	})
}

// Broker killed mid-stream and restarted on the same port: the link comes
// back by itself, with nothing delivered twice.
func TestBrokerKilledAndRestarted(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		a, b := start(t, srv.URL, nil), start(t, srv.URL, nil)
		eventually(t, within, "connected", func() bool { return connected(a)() && connected(b)() })
		seq := 0
		for ; seq < 50; seq++ {
			a.Publish(ev(0, seq))
		}
		eventually(t, within, "first events", func() bool { return len(b.in.all()) == 50 })
		srv.Kill()
		eventually(t, within, "a notices", func() bool { return a.Stats().State != Connected })
		for range 20 { // dropped, counted
			a.Publish(ev(0, seq))
			seq++
		}
		srv.Start()
		eventually(t, within, "reconnected", func() bool { return connected(a)() && connected(b)() })
		last := ev(0, seq)
		a.Publish(last)
		eventually(t, within, "delivery resumes", func() bool { return b.in.has(last) })
		got := b.in.all()
		seen := map[string]bool{}
		for _, g := range got {
			if seen[string(g)] {
				t.Errorf("duplicate %q", g)
			}
			seen[string(g)] = true
		}
		answered := a.probeSeen.Load()
		eventually(t, within, "three probes answered on the new connection", func() bool { return a.probeSeen.Load() >= answered+3 })
		st := a.Stats()
		if st.Reconnects != 1 || st.SilentRepairs != 0 || st.DroppedDown < 20 || st.State != Connected {
			t.Errorf("stats after the outage %+v: want one reconnect, no silent repair, the 20 events sent while down counted", st)
		}
		checkOutageLogged(t, a.logs, srv)
	})
}

// checkOutageLogged: one outage, one warning, which says what it means;
// then a line for the connection back. No line shows a formatting error
// (NATS's disconnect once logged "%!w(<nil>)") or a max_payload Redis
// does not have.
func checkOutageLogged(t *testing.T, logs *brokertest.Log, srv *brokertest.Server) {
	t.Helper()
	if n := logs.Count(`"level":"warn"`); n != 1 || logs.Count("lost the broker; reconnecting: events are delivered to this replica's listeners only") != 1 {
		t.Errorf("logged %d warnings, want one for the outage, that the broker was lost:\n%s", n, logs)
	}
	if logs.Count(`"dropped_down_total":`) != 1 {
		t.Errorf("no line for the connection back with the events dropped meanwhile:\n%s", logs)
	}
	if strings.Contains(logs.String(), "%!") {
		t.Errorf("a formatting error in the logs:\n%s", logs)
	}
	isRedis := strings.HasPrefix(srv.URL, "redis")
	if got := logs.Count(`"max_payload":`); (isRedis && got != 0) || (!isRedis && got != 2) {
		t.Errorf("%d lines with max_payload; want it only from NATS, which has one, on each connection:\n%s", got, logs)
	}
}

// A paused broker keeps its connections open and answers nothing: the probe
// finds the silent subscription and the link reconnects once it resumes.
func TestPausedBrokerTriggersTheProbe(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		a, b := start(t, srv.URL, nil), start(t, srv.URL, nil)
		eventually(t, within, "connected", func() bool { return connected(a)() && connected(b)() })
		srv.Pause()
		eventually(t, within, "probe finds the silence", func() bool { return a.Stats().SilentRepairs >= 1 })
		if st := a.Stats().State; st == Connected {
			// It may have reconnected to the paused server's listen backlog
			// only if the handshake succeeded, which a paused server cannot do.
			t.Errorf("state %s while the broker is paused", st)
		}
		srv.Resume()
		eventually(t, within, "reconnected", func() bool { return connected(a)() && connected(b)() })
		msg := ev(0, 99)
		eventually(t, within, "delivery resumes", func() bool {
			a.Publish(msg) // until one gets through: a publish lost on the frozen connection is not retried
			time.Sleep(50 * time.Millisecond)
			return b.in.has(msg)
		})
		// The probe the frozen connection never answered is not held
		// against the new one.
		answered := a.probeSeen.Load()
		eventually(t, within, "three probes answered on the new connection", func() bool { return a.probeSeen.Load() >= answered+3 })
		if st := a.Stats(); st.SilentRepairs != 1 || st.State != Connected {
			t.Errorf("stats %+v: want exactly one silent repair, connected", st)
		}
	})
}

// Redis disconnects a subscriber that falls behind its output buffer limit:
// the other replicas are unaffected, and the slow one reconnects by itself
// once it reads again.
func TestRedisDisconnectsSlowSubscriber(t *testing.T) {
	srv := brokertest.Redis(t, "--client-output-buffer-limit", "pubsub 256kb 64kb 1")
	pub, fast, slow := start(t, srv.URL, nil), start(t, srv.URL, nil), start(t, srv.URL, nil)
	eventually(t, within, "connected", func() bool { return connected(pub)() && connected(fast)() && connected(slow)() })
	slow.in.mu.Lock()
	slow.in.block = make(chan struct{})
	release := slow.in.block
	slow.in.mu.Unlock()
	big := bytes.Repeat([]byte("x"), 4<<10)
	const n = 400 // 1.6 MB: far beyond the 256 KB limit and what the kernel buffers for a blocked reader
	for i := range n {
		pub.Publish(fmt.Appendf(nil, `{"seq":%d,"pad":"%s"}`, i, big))
		if i%5 == 4 {
			// Small bursts: the replicas that do read stay far below the limit.
			time.Sleep(10 * time.Millisecond)
		}
	}
	eventually(t, within, "the fast replica receives everything", func() bool { return len(fast.in.all()) == n })
	eventually(t, within, "redis drops the slow subscriber", func() bool { return slow.Stats().State != Connected })
	slow.in.mu.Lock()
	slow.in.block = nil
	slow.in.mu.Unlock()
	close(release)
	eventually(t, within, "the slow replica reconnects", connected(slow))
	if st := slow.Stats(); st.Reconnects < 1 {
		t.Errorf("slow replica stats %+v: want a reconnect", st)
	}
	if got := len(slow.in.all()); got >= n {
		t.Errorf("slow replica received all %d events: Redis did not disconnect it", got)
	}
	last := []byte(`{"after":true}`)
	eventually(t, within, "the slow replica receives again", func() bool {
		pub.Publish(last)
		time.Sleep(50 * time.Millisecond)
		return slow.in.has(last)
	})
	if st := pub.Stats(); st.PublishErrors != 0 {
		t.Errorf("publisher affected by the slow subscriber: %+v", st)
	}
}

// An event over NATS max_payload is delivered locally only (the caller's
// business) and counted; the mismatch is reported when connecting.
func TestNATSMaxPayload(t *testing.T) {
	srv := brokertest.NATS(t, "max_payload: 4096")
	a := start(t, srv.URL, func(o *Options) { o.MaxEventBytes = 8192 })
	b := start(t, srv.URL, func(o *Options) { o.MaxEventBytes = 1000 })
	eventually(t, within, "connected", func() bool { return connected(a)() && connected(b)() })
	if !strings.Contains(a.logs.String(), "MAX_BODY_BYTES exceeds what the broker carries") {
		t.Errorf("no warning about max_payload at connect:\n%s", a.logs)
	}
	if strings.Contains(b.logs.String(), "MAX_BODY_BYTES exceeds") {
		t.Errorf("warned although 1000-byte events fit:\n%s", b.logs)
	}
	large := fmt.Appendf(nil, `{"pad":"%s"}`, bytes.Repeat([]byte("y"), 5000))
	small := []byte(`{"small":1}`)
	a.Publish(large)
	a.Publish(small)
	eventually(t, within, "small delivered", func() bool { return b.in.has(small) })
	if b.in.has(large) {
		t.Error("the large event went through")
	}
	if st := a.Stats(); st.TooLarge != 1 || st.Sent != 1 || st.State != Connected {
		t.Errorf("stats %+v: want too_large 1, sent 1, still connected", st)
	}
}

// A replica that stops reading lets the NATS client's pending queue fill:
// the client drops what comes after, and the Broker counts it.
func TestNATSClientDropsCounted(t *testing.T) {
	srv := brokertest.NATS(t, "")
	// The probe travels behind the held events: it must not reconnect,
	// which would throw the pending queue away uncounted.
	a := start(t, srv.URL, func(o *Options) { o.ProbeTimeout = time.Minute })
	eventually(t, within, "connected", connected(a))
	a.in.mu.Lock()
	a.in.block = make(chan struct{})
	a.in.mu.Unlock()

	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	other, sent := newOrigin(), natsPendingMsgs+5000
	for i := range sent {
		if err := nc.Publish(a.opts.Channel, other.seal(kindEvent, ev(9, i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	eventually(t, within, "drops counted", func() bool { return a.Stats().DroppedClient > 0 })
	a.in.mu.Lock()
	close(a.in.block)
	a.in.block = nil
	a.in.mu.Unlock()
	// Every event is either received or counted as dropped (probes held
	// behind them may be dropped and counted too).
	eventually(t, within, "every event accounted for", func() bool {
		st := a.Stats()
		return st.Received+st.DroppedClient >= uint64(sent)
	})
	if st := a.Stats(); st.Received >= uint64(sent) || st.State != Connected {
		t.Errorf("stats %+v: want events dropped by the client, still connected", st)
	}
}

// Messages on the channel that this service did not write are counted and
// ignored, with one log line.
func TestForeignMessagesIgnored(t *testing.T) {
	srv := brokertest.Redis(t)
	a := start(t, srv.URL, nil)
	eventually(t, within, "connected", connected(a))
	a.receive([]byte(`{"not":"ours"}`))
	a.receive([]byte(`ed1 0123456789abcdef x {}`))
	if st := a.Stats(); st.Foreign != 2 || st.Invalid != 0 || st.Received != 0 || len(a.in.all()) != 0 {
		t.Errorf("stats %+v, inbox %q", st, a.in.all())
	}
	if n := a.logs.Count("did not write"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
}

func TestEnvelope(t *testing.T) {
	o := newOrigin()
	payload := []byte(`{"a":"b c"}`)
	msg := o.seal(kindEvent, payload)
	payload[2] = 'Z' // the caller may reuse its buffer
	from, kind, got, ok := open(msg)
	if !ok || from != o || kind != kindEvent || string(got) != `{"a":"b c"}` {
		t.Errorf("open(seal) = %q %c %q %v", from, kind, got, ok)
	}
	if o2 := newOrigin(); o2 == o {
		t.Error("two origins are equal")
	}
	for _, bad := range []string{"", "ed1 ", "ed2 0123456789abcdef e {}", "ed1 0123456789abcdef e{}"} {
		if _, _, _, ok := open([]byte(bad)); ok {
			t.Errorf("open(%q) accepted", bad)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := []struct {
		url, channel string
		kind         Kind
		err          string // substring; "" for valid
	}{
		{"redis://127.0.0.1:6379", "c", Redis, ""},
		{"redis://user:pw@host:6379/2", "c", Redis, ""},
		{"rediss://cache.example:6380", "c", Redis, ""},
		{"nats://a:4222,nats://b:4222", "c.d", NATS, ""},
		{"nats://a:4222", "c.*", "", "BROKER_CHANNEL"},
		{"nats://a:4222", "c..d", "", "BROKER_CHANNEL"},
		{"redis://a:1", "", "", "BROKER_CHANNEL"},
		{"redis://a:1", "has space", "", "BROKER_CHANNEL"},
		{"http://a:1", "c", "", "BROKER_URL"},
		{"localhost:6379", "c", "", "BROKER_URL"},
		{"redis://u:hunter2@a:1/notadb", "c", "", "BROKER_URL"},
		{"nats://u:hunter2@a:1,http://b", "c", "", "BROKER_URL"},
		{"nats://", "c", "", "BROKER_URL"},
		{"redis://u:p%zzhunter2@a:1", "c", "", "BROKER_URL"},
		{"redis://:hunter2/x@a:1", "c", "", "BROKER_URL"},
		{"redis://u:hunter2#x@a:1/0", "c", "", "BROKER_URL"},
		{"rediss://u:hunter2@a:port", "c", "", "BROKER_URL"},
		{"nats://u:hunter2@a:1,nats://u:p%zzhunter2@b:1", "c", "", "BROKER_URL"},
	}
	for _, tc := range cases {
		kind, err := Validate(tc.url, tc.channel)
		switch {
		case tc.err == "" && (err != nil || kind != tc.kind):
			t.Errorf("Validate(%q, %q) = %q, %v; want %q", tc.url, tc.channel, kind, err, tc.kind)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err+":")):
			t.Errorf("Validate(%q, %q) error %v; want one naming %s", tc.url, tc.channel, err, tc.err)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("error shows the password: %v", err)
		}
	}
}

func TestBackoffCappedAndJittered(t *testing.T) {
	const limit = 2 * time.Second
	seen := map[time.Duration]bool{}
	for f := 1; f < 40; f++ {
		d := backoff(f, limit)
		if d <= 0 || d > limit {
			t.Fatalf("backoff(%d) = %s, want in (0, %s]", f, d, limit)
		}
		seen[d] = true
	}
	if len(seen) < 20 {
		t.Errorf("only %d distinct delays in 39 attempts: no jitter", len(seen))
	}
}

// foreignPublish writes msg on channel as some other program with access to
// the broker would.
func foreignPublish(t *testing.T, srv *brokertest.Server, channel string, msgs ...[]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if strings.HasPrefix(srv.URL, "nats://") {
		nc, err := nats.Connect(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		for _, m := range msgs {
			if err := nc.Publish(channel, m); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}
		return
	}
	opts, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opts)
	defer c.Close()
	for _, m := range msgs {
		if err := c.Publish(ctx, channel, m).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// Whoever can publish on the channel can wear the envelope, but what
// reaches the hub (written to listeners as is) is one JSON object on one
// line within MaxEventBytes: no forged SSE fields or events, no non-JSON.
func TestForgedEnvelopesNotDelivered(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		a := start(t, srv.URL, func(o *Options) { o.MaxEventBytes = 1000 })
		eventually(t, within, "connected", connected(a))
		forged := func(payload string) []byte { return []byte("ed1 0123456789abcdef e " + payload) }
		marker := forged(`{"ok":1}`)
		foreignPublish(t, srv, a.opts.Channel,
			forged("{\"a\":1}\n\ndata: {\"forged\":true}\n\nretry: 1"),
			forged("{\"a\":1}\rdata: {\"forged\":true}"),
			forged("{\r\n}"),
			forged(`not json`),
			forged(`[1,2]`),
			forged(`{"a":1}{"b":2}`),
			forged(""),
			forged(`{"pad":"`+strings.Repeat("z", 1000)+`"}`),
			forged("{\"a\":\"\xff\xfe\"}"), // invalid UTF-8, which ingest refuses
			forged(`{"a":"\ud800"}`),       // I-JSON: a lone surrogate
			forged(`{"a":1e400}`),          // I-JSON: beyond a double
			marker,
		)
		eventually(t, within, "the well-formed event arrives", func() bool { return a.in.has([]byte(`{"ok":1}`)) })
		if got := a.in.all(); len(got) != 1 {
			t.Errorf("handler got %q; want only the well-formed event", got)
		}
		if st := a.Stats(); st.Foreign != 11 || st.Invalid != 11 || st.Received != 1 {
			t.Errorf("stats %+v: want 11 foreign, all invalid, 1 received", st)
		}
		if n := a.logs.Count("did not write"); n != 1 {
			t.Errorf("logged %d times, want once:\n%s", n, a.logs)
		}
	})
}

// With STRICT_JSON=false the relay takes what ingest then takes, and still
// never invalid UTF-8.
func TestLenientRelayStillRefusesInvalidUTF8(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		a := start(t, srv.URL, func(o *Options) { o.LenientJSON = true })
		eventually(t, within, "connected", connected(a))
		forged := func(payload string) []byte { return []byte("ed1 0123456789abcdef e " + payload) }
		foreignPublish(t, srv, a.opts.Channel, forged("{\"a\":\"\xff\"}"), forged(`{"a":1e400}`))
		eventually(t, within, "the lenient event arrives", func() bool { return a.in.has([]byte(`{"a":1e400}`)) })
		if st := a.Stats(); st.Foreign != 1 || st.Invalid != 1 || st.Received != 1 || len(a.in.all()) != 1 {
			t.Errorf("stats %+v, handler got %q: want the invalid UTF-8 refused, the large number through", st, a.in.all())
		}
	})
}

// A replica's origin is visible to anyone on the channel, so anyone can
// forge its probes: a forged answer to a probe not sent yet must not count,
// or it would blind the probe to a silent subscription for good.
func TestForgedProbeDoesNotBlindTheProbe(t *testing.T) {
	brokers(t, func(t *testing.T, srv *brokertest.Server) {
		a := start(t, srv.URL, nil)
		eventually(t, within, "connected", connected(a))
		foreignPublish(t, srv, a.opts.Channel, a.origin.seal(kindProbe, []byte("18446744073709551615")))
		sent := a.probeSent.Load()
		eventually(t, within, "two more probes answered", func() bool { return a.probeSeen.Load() >= sent+2 })
		if seen, sent := a.probeSeen.Load(), a.probeSent.Load(); seen > sent {
			t.Errorf("probe %d counted as answered, only %d sent", seen, sent)
		}
	})
}
