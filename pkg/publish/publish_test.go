package publish_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/event"
	"event-dispatcher/pkg/publish"
)

// recorder is a sink that keeps copies of what it was given.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) Put(data []byte) {
	r.mu.Lock()
	r.got = append(r.got, string(data))
	r.mu.Unlock()
}

func newHub(t *testing.T) *broadcast.Hub {
	t.Helper()
	h, err := broadcast.New(broadcast.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	return h
}

func TestDoorHandsTheCompactEventToHubAndEverySink(t *testing.T) {
	hub := newHub(t)
	a, b := &recorder{}, &recorder{}
	p := publish.New(publish.Options{Hub: hub, Sinks: []publish.Sink{a, b}, ClientIPField: "ip"})
	door := p.Door("post")

	dst := make([]byte, 0, 64)
	out, err := door.Publish(dst, []byte(` { "a" : 1, "ip": "forged" } `), "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"a":1,"ip":"192.0.2.1"}`
	if string(out) != want {
		t.Fatalf("Publish returned %s, want %s", out, want)
	}
	for name, r := range map[string]*recorder{"first": a, "second": b} {
		if len(r.got) != 1 || r.got[0] != want {
			t.Errorf("%s sink got %q, want [%s]", name, r.got, want)
		}
	}
	if got := hub.Stats().EventsAccepted; got != 1 {
		t.Errorf("hub accepted %d events, want 1", got)
	}
	if st := p.Stats(); len(st) != 1 || st[0] != (publish.DoorStats{Name: "post", Accepted: 1}) {
		t.Errorf("Stats() = %+v", st)
	}
}

func TestInvalidEventReachesNeitherHubNorSinks(t *testing.T) {
	hub := newHub(t)
	sink := &recorder{}
	p := publish.New(publish.Options{Hub: hub, Sinks: []publish.Sink{sink}})
	door := p.Door("upstream")

	for _, body := range []string{``, `[1]`, `{"a":`, `{"n":1e400}`, "{\"s\":\"\xff\"}"} {
		_, err := door.Publish(nil, []byte(body), "")
		if !errors.Is(err, publish.ErrInvalid) {
			t.Errorf("Publish(%q) = %v, want ErrInvalid", body, err)
		}
	}
	_, err := door.Publish(nil, []byte(`{"n":1e400}`), "")
	if !errors.Is(err, event.ErrRange) || err.Error() != event.ErrRange.Error() {
		t.Errorf("the reason is lost or decorated: %v", err)
	}
	if len(sink.got) != 0 || hub.Stats().EventsAccepted != 0 {
		t.Errorf("an invalid event went on: sink %q, hub %d", sink.got, hub.Stats().EventsAccepted)
	}
	if st := p.Stats()[0]; st.Invalid != 6 || st.Accepted != 0 {
		t.Errorf("Stats() = %+v, want 6 invalid", st)
	}
}

func TestLenientAcceptsWhatStrictRefuses(t *testing.T) {
	body := []byte(`{"n":1e400}`)
	strict := publish.New(publish.Options{Hub: newHub(t)}).Door("post")
	lenient := publish.New(publish.Options{Hub: newHub(t), Lenient: true}).Door("post")
	if _, err := strict.Publish(nil, body, ""); !errors.Is(err, publish.ErrInvalid) {
		t.Errorf("strict: %v, want ErrInvalid", err)
	}
	if _, err := lenient.Publish(nil, body, ""); err != nil {
		t.Errorf("lenient: %v", err)
	}
}

func TestRefusedByTheHubNeverReachesSinks(t *testing.T) {
	hub := newHub(t)
	sink := &recorder{}
	p := publish.New(publish.Options{Hub: hub, Sinks: []publish.Sink{sink}})
	door := p.Door("grpc")
	if err := hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := door.Publish(nil, []byte(`{"a":1}`), ""); !errors.Is(err, publish.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if len(sink.got) != 0 {
		t.Errorf("sink got %q from a refused event", sink.got)
	}
	if st := p.Stats()[0]; st.Busy != 1 {
		t.Errorf("Stats() = %+v, want 1 busy", st)
	}
}

func TestDoorIsOnePerName(t *testing.T) {
	p := publish.New(publish.Options{Hub: newHub(t)})
	if p.Door("post") != p.Door("post") || p.Door("post") == p.Door("grpc") {
		t.Fatal("Door must return one door per name")
	}
	if got := len(p.Stats()); got != 2 {
		t.Fatalf("%d doors, want 2", got)
	}
}

func TestPrepareAppliesTheDoorsCheckAndPublishesNothing(t *testing.T) {
	hub := newHub(t)
	sink := &recorder{}
	p := publish.New(publish.Options{Hub: hub, Sinks: []publish.Sink{sink}})
	door := p.Door("cloudevents")
	refuse := errors.New("id: missing")
	var checked string
	check := func(ev []byte) error { checked = string(ev); return refuse }
	if _, err := door.Prepare(nil, []byte(`{ "a": 1 }`), "", check); !errors.Is(err, publish.ErrInvalid) || err.Error() != "id: missing" {
		t.Fatalf("Prepare = %v, want ErrInvalid with the check's text", err)
	}
	if checked != `{"a":1}` {
		t.Errorf("check saw %q, want the compact event", checked)
	}
	ok, err := door.Prepare(nil, []byte(`{ "a": 2 }`), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(sink.got) != 0 || hub.Stats().EventsAccepted != 0 {
		t.Fatal("Prepare published")
	}
	if n, err := door.SendAll(context.Background(), [][]byte{ok, ok}, 0); n != 2 || err != nil {
		t.Fatalf("SendAll = %d, %v", n, err)
	}
	if st := p.Stats()[0]; st.Invalid != 1 || st.Accepted != 2 || len(sink.got) != 2 {
		t.Errorf("Stats() = %+v, sink %q", st, sink.got)
	}
	if err := hub.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, err := door.SendAll(context.Background(), [][]byte{ok}, time.Second); n != 0 || !errors.Is(err, publish.ErrClosed) {
		t.Fatalf("SendAll on a closed hub = %d, %v; want 0, ErrClosed at once", n, err)
	}
}

func TestKeepClientIPLeavesTheFieldAsItCame(t *testing.T) {
	p := publish.New(publish.Options{Hub: newHub(t), ClientIPField: "ip"})
	relayed := p.Door("upstream").KeepClientIP()
	for body, want := range map[string]string{
		`{"a":1, "ip":"192.0.2.7"}`: `{"a":1,"ip":"192.0.2.7"}`, // set by the first hop: kept
		`{"a":1}`:                   `{"a":1}`,
	} {
		out, err := relayed.Publish(nil, []byte(body), "")
		if err != nil || string(out) != want {
			t.Errorf("relayed %s: %s, %v; want %s", body, out, err, want)
		}
	}
	if out, _ := p.Door("post").Publish(nil, []byte(`{"ip":"forged"}`), "192.0.2.1"); string(out) != `{"ip":"192.0.2.1"}` {
		t.Errorf("another door lost its client IP: %s", out)
	}
}
