package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// manyStreams opens n EventSources on /events from the page it runs in and
// records, for each, whether it opened and what it received.
const manyStreams = `(() => {
  window.streams = {opened: 0, errors: 0, received: []};
  for (let i = 0; i < %d; i++) {
    const got = [];
    streams.received.push(got);
    const es = new EventSource("/events");
    es.onopen = () => { streams.opened++; };
    es.onerror = () => { streams.errors++; };
    es.onmessage = e => { got.push(e.data); };
  }
  return true;
})()`

type streamsState struct {
	Opened   int        `json:"opened"`
	Errors   int        `json:"errors"`
	Received [][]string `json:"received"`
}

// pollStreams waits until the JavaScript condition holds on the page, or
// guard passes, and returns window.streams and whether the condition held.
func pollStreams(t *testing.T, tab context.Context, cond string, guard time.Duration) (streamsState, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, guard)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(0)))
	rctx, rcancel := context.WithTimeout(tab, 10*time.Second)
	defer rcancel()
	st, rerr := chromedp.Run(rctx, chromedp.Evaluate[streamsState]("window.streams"))
	if rerr != nil {
		t.Fatalf("reading window.streams: %v", rerr)
	}
	return st, err == nil
}

// A page of the service's HTTPS origin opens 20 EventSources at once: over
// HTTP/2 they share one connection, so all 20 open (over HTTP/1.1 a
// browser holds at most 6 per origin, and the 7th hangs), and all 20
// receive the event POSTed next.
func TestBrowserTwentyStreamsOverHTTP2(t *testing.T) {
	const n = 20
	browser := startChromium(t, chromedp.Flag("ignore-certificate-errors", true)) // the test's own certificate
	srv := startH2(t, "tls", broadcast.Options{Heartbeat: 100 * time.Millisecond}, server.Options{}, 0)
	tab := openPage(t, browser, srv.URL+"/health") // any page of the origin: the streams are same-origin

	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`performance.getEntriesByType("navigation")[0].nextHopProtocol`))
	if err != nil || proto != "h2" {
		t.Fatalf("page loaded over %q (%v), want h2", proto, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(manyStreams, n))); err != nil {
		t.Fatal(err)
	}
	st, ok := pollStreams(t, tab, fmt.Sprintf("streams.opened >= %d || streams.errors > 0", n), browserWait)
	if !ok || st.Opened != n || st.Errors != 0 {
		t.Fatalf("%d of %d EventSources open, %d errors; want all open", st.Opened, n, st.Errors)
	}
	ssetest.Eventually(t, browserWait, "every stream subscribed", func() (bool, string) {
		h, _ := srv.Health(t)
		return h.Listeners == n, fmt.Sprintf("%d listeners", h.Listeners)
	})

	ev := sessionMessage(t, string(ssetest.Fixture(t, "start-web.json")), "twenty-streams")
	srv.Publish(t, ev)
	st, ok = pollStreams(t, tab, "streams.received.every(r => r.length >= 1)", browserWait)
	if !ok {
		t.Fatalf("not every stream received the event: %v", st.Received)
	}
	for i, got := range st.Received {
		if len(got) != 1 || got[0] != string(ev) {
			t.Errorf("EventSource %d received %q, want exactly %q", i, got, ev)
		}
	}

	// The same page over HTTP/1.1 shows the browser's limit. Logged, not
	// asserted: the number is the browser's to choose.
	t.Run("over HTTP/1.1, for the record", func(t *testing.T) {
		plain := ssetest.Start(t, broadcast.Options{Heartbeat: 100 * time.Millisecond}, server.Options{})
		tab := openPage(t, browser, plain.URL+"/health")
		ctx, cancel := context.WithTimeout(tab, browserWait)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(manyStreams, n))); err != nil {
			t.Fatal(err)
		}
		pollStreams(t, tab, "streams.opened >= 6", 10*time.Second)
		time.Sleep(time.Second) // give the others a chance: they do not come
		plain.Publish(t, ev)
		st, _ := pollStreams(t, tab, "streams.received.filter(r => r.length > 0).length >= streams.opened", 10*time.Second)
		got := 0
		for _, r := range st.Received {
			if len(r) > 0 {
				got++
			}
		}
		h, _ := plain.Health(t)
		t.Logf("over HTTP/1.1: %d of %d EventSources open, %d received the event, %d listeners at the server", st.Opened, n, got, h.Listeners)
	})
}
