package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/event"
	"event-dispatcher/pkg/server"
)

// STRICT_JSON (the default) refuses what strict consumers cannot decode;
// turned off, the same bodies pass byte for byte. I-JSON passes in both.
func TestStrictJSONThroughTheServer(t *testing.T) {
	t.Parallel()
	refused := []struct{ name, body, msg string }{
		{"number beyond double range", `{"k":"s3cr3t","n":1e999999}`, event.ErrRange.Error()},
		{"negative number beyond range", `{"k":"s3cr3t","n":-1e400}`, event.ErrRange.Error()},
		{"lone high surrogate", `{"k":"s3cr3t","s":"\ud800"}`, event.ErrSurrogate.Error()},
		{"lone low surrogate", `{"k":"s3cr3t","s":"\udc00"}`, event.ErrSurrogate.Error()},
		{"high surrogate then a non-low escape", `{"k":"s3cr3t","s":"\ud800\u0041"}`, event.ErrSurrogate.Error()},
		{"lone surrogate in a key", `{"k":"s3cr3t","\ud800":1}`, event.ErrSurrogate.Error()},
	}
	passed := []string{
		`{"big":12345678901234567890,"i64":9007199254740993}`,
		`{"precise":0.1000000000000000055511151231257827021181583404541015625,"max":1.7976931348623157e308}`,
		`{"pair":"\ud83d\ude00","escaped":"\\ud800","tiny":1e-400}`,
	}
	for _, mode := range []struct {
		name    string
		lenient bool
	}{{"strict by default", false}, {"STRICT_JSON=false", true}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			srv := ssetest.Start(t, broadcast.Options{}, server.Options{LenientJSON: mode.lenient})
			listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
			for _, c := range refused {
				pretty := strings.ReplaceAll(c.body, ",", ",\n  ")
				r, err := srv.Post(within(t, 10*time.Second), "/api/events", "application/json", []byte(pretty))
				if err != nil {
					t.Fatal(err)
				}
				if !mode.lenient {
					wantError(t, r, http.StatusBadRequest, c.msg, []byte(c.body))
					continue
				}
				if r.Status != http.StatusNoContent {
					t.Errorf("%s: status %d %s, want 204", c.name, r.Status, r.Body)
				}
				if got := listener.NextData(t, within(t, 10*time.Second)); got != c.body {
					t.Errorf("%s: listener got %q, want %q", c.name, got, c.body)
				}
			}
			for _, body := range passed {
				srv.Publish(t, []byte(strings.ReplaceAll(body, ",", " ,\n\t")))
				if got := listener.NextData(t, within(t, 10*time.Second)); got != body {
					t.Errorf("listener got %q, want %q", got, body)
				}
			}
			wantRejected := uint64(len(refused))
			if mode.lenient {
				wantRejected = 0
			}
			if h, _ := srv.Health(t); h.EventsRejected != wantRejected {
				t.Errorf("events_rejected %d, want %d", h.EventsRejected, wantRejected)
			}
		})
	}
}
