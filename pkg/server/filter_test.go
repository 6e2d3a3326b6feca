package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// TestStreamFilters subscribes filtered and unfiltered listeners over real
// HTTP, publishes events that differ in string, number and bool fields, and
// checks that each listener received exactly the events its filter keeps,
// in order: nothing missing, nothing extra. What each filter keeps is
// worked out here with encoding/json, independently of the server.
func TestStreamFilters(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 20 * time.Millisecond}, server.Options{})
	queries := []string{
		"", // unfiltered, twice
		"",
		"event_name=START",
		"event_name=START,ERROR",
		"session_id=s1",
		"event_name=ERROR&session_id=s2",
		"session_id=s0&session_id=s2", // a field given twice: either value
		"live=true",                   // bool
		"n=3,5,8",                     // number
		"version=1",                   // number, from the player's message
		"session_id=s%2C1",            // an escaped comma is part of the value
		"no_such_field=x",             // nothing has it: no events
		"access_token=t0k3n",          // reserved, not a filter: every event
		"event_name=STOP&access_token=t0k3n",
	}
	paths := []string{"/events", "/event-dispatcher"}
	streams := make([]*ssetest.Stream, len(queries))
	for i, q := range queries {
		streams[i] = ssetest.Subscribe(t, srv.Client, srv.URL+paths[i%2]+"?"+q, nil)
	}
	ctx := within(t, time.Minute)
	results := make([]func() ([]string, error), len(queries))
	for i, s := range streams {
		results[i] = collect(ctx, s)
	}

	fixtures := loadValid(t)
	sessions := []string{"s0", "s1", "s2", "s,1"}
	var events []string
	for n := range 40 {
		body := sessionMessage(t, string(fixtures[n%len(fixtures)]), sessions[n%len(sessions)])
		body = ssetest.WithMembers(body, fmt.Sprintf(`"n":%d,"live":%t`, n, n%3 == 0))
		body = tagged(body, tag{Pub: 0, Seq: n})
		srv.Publish(t, body)
		events = append(events, compact(t, body))
	}
	// One end marker per filter, made to pass it, after every event: each
	// listener stops at the first marker it gets, so it has seen every
	// event by then.
	for i, q := range queries {
		srv.Publish(t, sentinelFor(t, i, q))
	}

	for i, q := range queries {
		got, err := results[i]()
		if err != nil {
			t.Errorf("listener %q: %v", q, err)
			continue
		}
		want := map[tag]string{}
		for _, ev := range events {
			if keeps(t, q, ev) {
				g, _ := tagOf(ev)
				want[g] = ev
			}
		}
		if len(want) == 0 && q != "no_such_field=x" {
			t.Errorf("listener %q: the test sends nothing it keeps", q)
		}
		checkDelivery(t, "listener "+q, got, want)
	}
}

// sentinelFor is an end marker that passes the filter in query.
func sentinelFor(t *testing.T, seq int, query string) []byte {
	t.Helper()
	b := fmt.Appendf(nil, `{"test_pub":%d,"test_seq":%d`, sentinelPub, seq)
	for field, vs := range filterTerms(query) {
		b = fmt.Appendf(b, `,%s:%s`, jsString(field), jsString(vs[0]))
	}
	return append(b, '}')
}

// keeps is the filter semantics, independently of the server: for every
// field of the query (but access_token), the event's top-level member of
// that name is a string equal to one of the values, or a number or bool
// whose JSON literal is.
func keeps(t *testing.T, query, ev string) bool {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(ev))
	dec.UseNumber() // keeps number literals as sent
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatal(err)
	}
	for field, values := range filterTerms(query) {
		var lit string
		switch v := obj[field].(type) {
		case string:
			lit = v
		case json.Number:
			lit = v.String()
		case bool:
			lit = fmt.Sprint(v)
		default:
			return false
		}
		found := false
		for _, want := range values {
			found = found || want == lit
		}
		if !found {
			return false
		}
	}
	return true
}

// filterTerms splits a filter query into its fields and values.
func filterTerms(query string) map[string][]string {
	terms := map[string][]string{}
	for pair := range strings.SplitSeq(query, "&") {
		name, vals, _ := strings.Cut(pair, "=")
		if name == "" || name == "access_token" {
			continue
		}
		for v := range strings.SplitSeq(vals, ",") {
			v, _ = url.QueryUnescape(v)
			terms[name] = append(terms[name], v)
		}
	}
	return terms
}

// TestStreamFilterHeartbeats: a filtered listener that matches nothing
// still gets the keep-alive comments, so clients' idle timeouts do not
// fire.
func TestStreamFilterHeartbeats(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 20 * time.Millisecond}, server.Options{})
	s := ssetest.Subscribe(t, srv.Client, srv.URL+"/events?event_name=NEVER", nil)
	ctx := within(t, 30*time.Second)
	srv.Publish(t, ssetest.Fixture(t, "start.json"))
	for range 3 {
		e, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for a heartbeat: %v", err)
		}
		if !e.IsComment() || e.Comments[0] != "hb" {
			t.Fatalf("block %q: want only heartbeats", e.Raw)
		}
	}
}

// TestStreamFilterRejected: a malformed filter is refused with 400 and a
// JSON error before the stream starts, and does not disturb a listener
// already connected.
func TestStreamFilterRejected(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	tap := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	var fields []string
	for i := range 17 {
		fields = append(fields, fmt.Sprintf("f%d=x", i))
	}
	tooMany := strings.Join(fields, "&")
	for _, tc := range []struct{ query, msg string }{
		{"event_name=", `filter "event_name": empty value (use comma-separated values)`},
		{"event_name=START,", `filter "event_name": empty value (use comma-separated values)`},
		{"event_name=START,,ERROR", `filter "event_name": empty value (use comma-separated values)`},
		{"=START", "filter: a parameter has no field name"},
		{"event_name=%zz", "filter: malformed query string"},
		{"%zz=START", "filter: malformed query string"},
		{tooMany, "filter: more than 16 fields"},
		{"session_id=" + strings.Repeat("s,", 256) + "s", "filter: more than 256 values"},
	} {
		t.Run(tc.query[:min(len(tc.query), 40)], func(t *testing.T) {
			r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, "/events?"+tc.query, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, r, http.StatusBadRequest, tc.msg, nil)
		})
	}
	ev := ssetest.Fixture(t, "stop.json")
	srv.Publish(t, ev)
	if got := tap.NextData(t, within(t, 10*time.Second)); got != compact(t, ev) {
		t.Errorf("listener: got %.80q, want the event published after the refusals", got)
	}
	if h, _ := srv.Health(t); h.Listeners != 1 {
		t.Errorf("listeners = %d, want 1: a refused filter must not hold a slot", h.Listeners)
	}
}
