package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/internal/testenv"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// chromiumPath is where Debian's chromium package puts the browser; .ci/run
// installs it.
const chromiumPath = "/usr/bin/chromium"

// browserWait bounds each wait on the page: a guard against hangs only.
const browserWait = time.Minute

// playerPage is served from its own origin. It listens to the stream like a
// dashboard and sends like players do: a beacon (text/plain, no preflight,
// response unreadable) and a JSON fetch (preflighted, response read). With
// sendOnOpen it sends once the stream is open, so the events must come back
// to it; otherwise at once, because the stream may be refused.
const playerPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>player</title></head><body><script>
const dispatcher = %s;
const beaconMsg = JSON.parse(%s);
const fetchMsg = JSON.parse(%s);
const sendOnOpen = %t;
window.state = {received: [], opened: false, streamErrors: 0, streamState: null,
  beaconQueued: null, fetchStatus: null, fetchError: null};
let sent = false;
function send() {
  if (sent) return;
  sent = true;
  state.beaconQueued = navigator.sendBeacon(dispatcher + "/api/events", JSON.stringify(beaconMsg));
  fetch(dispatcher + "/metrics", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(fetchMsg)})
    .then(r => { state.fetchStatus = r.status; }, e => { state.fetchError = e.name + ": " + e.message; });
}
const es = new EventSource(dispatcher + "/events");
es.onmessage = e => { state.received.push(e.data); };
es.onopen = () => { state.opened = true; if (sendOnOpen) send(); };
es.onerror = () => { state.streamErrors++; state.streamState = es.readyState; };
if (!sendOnOpen) send();
</script></body></html>`

// pageState is window.state of playerPage.
type pageState struct {
	Received     []string `json:"received"`
	Opened       bool     `json:"opened"`
	StreamErrors int      `json:"streamErrors"`
	StreamState  *int     `json:"streamState"`
	BeaconQueued *bool    `json:"beaconQueued"`
	FetchStatus  *int     `json:"fetchStatus"`
	FetchError   *string  `json:"fetchError"`
}

func (s pageState) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestBrowserCrossOrigin runs a real headless Chromium against the
// dispatcher from a page on another origin: the web player's sendBeacon, a
// preflighted JSON fetch whose status must be readable, and an EventSource
// that must receive exactly those two events.
func TestBrowserCrossOrigin(t *testing.T) {
	browser := startChromium(t)

	for _, tc := range []struct {
		name    string
		origins func(page string) []string
	}{
		{"any origin", func(string) []string { return nil }},
		{"listed origin", func(page string) []string { return []string{page} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			beacon := sessionMessage(t, string(ssetest.Fixture(t, "start-web.json")), "beacon-"+tc.name)
			fetched := sessionMessage(t, string(ssetest.Fixture(t, "heartbeat.json")), "fetch-"+tc.name)
			sentinel := sessionMessage(t, string(ssetest.Fixture(t, "heartbeat.json")), "sentinel-"+tc.name)
			rig := newBrowserRig(t, tc.origins, true, beacon, fetched)
			tab := openPage(t, browser, rig.pageURL)

			// Waits for success, or stops at the first sign of failure.
			st := waitPage(t, tab, "both events and the fetch outcome", `state.streamState === EventSource.CLOSED ||
				state.fetchError !== null || (state.fetchStatus !== null && state.fetchStatus !== 204) ||
				(state.fetchStatus === 204 && state.received.length >= 2)`)
			if !st.Opened || st.StreamErrors != 0 {
				t.Fatalf("stream: want open without error; page state %v", st)
			}
			if st.FetchError != nil || st.FetchStatus == nil || *st.FetchStatus != http.StatusNoContent {
				t.Fatalf("fetch with a JSON Content-Type: want readable status 204; page state %v", st)
			}
			// Nothing may arrive besides the two events: one more event,
			// published after them, must be the very next one.
			rig.srv.Publish(t, sentinel)
			st = waitPage(t, tab, "the closing event", `state.received.length >= 3`)

			if st.BeaconQueued == nil || !*st.BeaconQueued {
				t.Errorf("sendBeacon did not queue the beacon; page state %v", st)
			}
			if st.StreamErrors != 0 {
				t.Errorf("stream: want no error; page state %v", st)
			}
			if len(st.Received) != 3 {
				t.Fatalf("page received %d events, want 3: %q", len(st.Received), st.Received)
			}
			// The beacon and the fetch race each other to the dispatcher.
			got := slices.Sorted(slices.Values(st.Received[:2]))
			want := slices.Sorted(slices.Values([]string{string(beacon), string(fetched)}))
			if !slices.Equal(got, want) {
				t.Errorf("page received\n%q\nwant, in any order,\n%q", st.Received[:2], want)
			}
			if st.Received[2] != string(sentinel) {
				t.Errorf("third event: got %q, want %q", st.Received[2], sentinel)
			}
		})
	}

	// With the page's origin not listed, the browser keeps the preflighted
	// fetch from going out and the stream from being read, and the server
	// refuses the beacon, which needs no preflight.
	t.Run("unlisted origin", func(t *testing.T) {
		beacon := sessionMessage(t, string(ssetest.Fixture(t, "start-web.json")), "beacon-unlisted")
		fetched := sessionMessage(t, string(ssetest.Fixture(t, "heartbeat.json")), "fetch-unlisted")
		sentinel := sessionMessage(t, string(ssetest.Fixture(t, "heartbeat.json")), "sentinel-unlisted")
		rig := newBrowserRig(t, func(string) []string { return []string{"http://127.0.0.1:1"} }, false, beacon, fetched)
		// A listener outside the browser, subscribed before the page loads.
		tap := ssetest.Subscribe(t, rig.srv.Client, rig.srv.URL+"/events", http.Header{"Content-Type": {"application/json"}})
		tab := openPage(t, browser, rig.pageURL)

		st := waitPage(t, tab, "the fetch outcome and the stream refusal",
			`(state.fetchError !== null || state.fetchStatus !== null) && (state.streamState !== null || state.opened)`)
		if st.FetchStatus != nil || st.FetchError == nil || !strings.HasPrefix(*st.FetchError, "TypeError") {
			t.Errorf("fetch from an unlisted origin: want a TypeError; page state %v", st)
		}
		if st.Opened || len(st.Received) != 0 {
			t.Errorf("stream from an unlisted origin: want refused by the browser; page state %v", st)
		}
		if st.BeaconQueued == nil || !*st.BeaconQueued {
			t.Errorf("sendBeacon did not queue the beacon; page state %v", st)
		}
		// The beacon reaches the server, which refuses it (403): counted as
		// rejected, never broadcast.
		ssetest.Eventually(t, browserWait, "the beacon refused", func() (bool, string) {
			h, _ := rig.srv.Health(t)
			return h.EventsRejected >= 1, fmt.Sprintf("%+v", h)
		})
		ctx, cancel := context.WithTimeout(context.Background(), browserWait)
		defer cancel()
		rig.srv.Publish(t, sentinel)
		if got := tap.NextData(t, ctx); got != string(sentinel) {
			t.Errorf("listener: got %q, want %q (nothing from an unlisted origin may be delivered)", got, sentinel)
		}
	})
}

// startChromium starts one headless Chromium for the test, with a fresh
// profile and any extra flags, and returns its context; each page opens in
// its own tab.
func startChromium(t *testing.T, flags ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Missing(t, fmt.Sprintf("no Chromium at %s (apt-get install chromium, or run .ci/run)", chromiumPath))
	}
	output := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // root in containers
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.CombinedOutput(output),
	)
	opts = append(opts, flags...)
	// Not t.Context(): it ends before cleanups run, which would kill the
	// browser instead of closing it. The timeout only guards against a hang.
	guard, cancelGuard := context.WithTimeout(context.Background(), 10*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(guard, opts...)
	ctx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		closeCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if err := chromedp.Cancel(closeCtx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing Chromium: %v", err)
		}
		cancel()
		cancelBrowser()
		cancelAlloc() // waits for the browser process to exit
		cancelGuard()
		if t.Failed() {
			t.Logf("Chromium output:\n%s", output)
		}
	})
	// The first run starts the browser, tied to ctx rather than to a step's
	// deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v\n%s", err, output)
	}
	return ctx
}

// browserRig is a dispatcher and, on another origin, the page that talks
// to it.
type browserRig struct {
	srv     *ssetest.Server
	pageURL string
}

// newBrowserRig starts a dispatcher allowing origins(page origin), and a
// page server on another port serving playerPage for beacon and fetched.
func newBrowserRig(t *testing.T, origins func(page string) []string, sendOnOpen bool, beacon, fetched []byte) browserRig {
	t.Helper()
	page := httptest.NewUnstartedServer(nil)
	t.Cleanup(page.Close)
	pageOrigin := "http://" + page.Listener.Addr().String()

	srv := ssetest.Start(t,
		broadcast.Options{Heartbeat: 100 * time.Millisecond}, // comments must not surface as messages
		server.Options{AllowOrigins: origins(pageOrigin)})

	html := fmt.Appendf(nil, playerPage, jsString(srv.URL), jsString(string(beacon)), jsString(string(fetched)), sendOnOpen)
	page.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(html)
	})
	page.Start()
	if page.URL == srv.URL {
		t.Fatalf("page and dispatcher share the origin %s", page.URL)
	}
	return browserRig{srv: srv, pageURL: page.URL + "/"}
}

// openPage loads url in a new tab, closed when the test ends.
func openPage(t *testing.T, browser context.Context, url string) context.Context {
	t.Helper()
	tab, closeTab := chromedp.NewContext(browser)
	t.Cleanup(closeTab)
	// The tab's event loop lives as long as the context of its first run:
	// that must be the tab's own context, not a step's deadline.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	return tab
}

// waitPage waits until the JavaScript condition holds on the page, then
// returns the page's state.
func waitPage(t *testing.T, tab context.Context, what, cond string) pageState {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(0)))
	st, stErr := readPage(tab)
	switch {
	case err != nil:
		t.Fatalf("waiting for %s: %v; page state %v (%v)", what, err, st, stErr)
	case stErr != nil:
		t.Fatalf("reading the page state: %v", stErr)
	}
	return st
}

func readPage(tab context.Context) (pageState, error) {
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[pageState]("window.state"))
}

// sessionMessage compacts a fixture and gives it the session id marker, so
// each event the test sends is recognisable.
func sessionMessage(t *testing.T, fixture, marker string) []byte {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(fixture)); err != nil {
		t.Fatal(err)
	}
	var msg struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(compact.Bytes(), &msg); err != nil {
		t.Fatal(err)
	}
	field := func(v string) []byte { return fmt.Appendf(nil, `"session_id":%s`, jsString(v)) }
	if bytes.Count(compact.Bytes(), field(msg.SessionID)) != 1 {
		t.Fatalf("fixture has no single session_id %q", msg.SessionID)
	}
	return bytes.Replace(compact.Bytes(), field(msg.SessionID), field(marker), 1)
}

// jsString quotes s as a JSON string, which is also a JavaScript string
// literal safe inside a script element (<, > and & are escaped).
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a string always marshals
	}
	return string(b)
}

// dashboardPage is a dashboard on its own origin holding a listener token:
// an EventSource passes it as ?access_token= (it cannot set headers), a
// fetch of the stream sends it as Authorization: Bearer (preflighted), and
// an EventSource without it must be refused.
const dashboardPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>dashboard</title></head><body><script>
const dispatcher = %s;
const token = %s;
window.state = {received: [], opened: false, streamState: null, bareState: null,
  fetchStatus: null, fetchFirst: null, fetchError: null};
const es = new EventSource(dispatcher + "/events?access_token=" + encodeURIComponent(token));
es.onmessage = e => { state.received.push(e.data); };
es.onopen = () => { state.opened = true; };
es.onerror = () => { state.streamState = es.readyState; };
const bare = new EventSource(dispatcher + "/events");
bare.onerror = () => { state.bareState = bare.readyState; };
const ctl = new AbortController();
fetch(dispatcher + "/events", {headers: {"Authorization": "Bearer " + token}, signal: ctl.signal})
  .then(async r => {
    state.fetchStatus = r.status;
    const chunk = await r.body.getReader().read();
    state.fetchFirst = new TextDecoder().decode(chunk.value);
    ctl.abort();
  })
  .catch(e => { if (state.fetchFirst === null) state.fetchError = e.name + ": " + e.message; });
</script></body></html>`

type dashboardState struct {
	Received    []string `json:"received"`
	Opened      bool     `json:"opened"`
	StreamState *int     `json:"streamState"`
	BareState   *int     `json:"bareState"`
	FetchStatus *int     `json:"fetchStatus"`
	FetchFirst  *string  `json:"fetchFirst"`
	FetchError  *string  `json:"fetchError"`
}

// TestBrowserListenerToken runs the public set-up (listener tokens, listed
// origins) against a real Chromium: the EventSource with ?access_token=
// receives events, a fetch with the Authorization header passes the CORS
// preflight and reads the stream, and an EventSource without a token is
// refused for good.
func TestBrowserListenerToken(t *testing.T) {
	browser := startChromium(t)
	page := httptest.NewUnstartedServer(nil)
	t.Cleanup(page.Close)
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		AllowOrigins: []string{"http://" + page.Listener.Addr().String()},
		Access:       access.Policy{Listeners: access.NewAuth([]string{listenToken}, nil)},
	})
	html := fmt.Appendf(nil, dashboardPage, jsString(srv.URL), jsString(listenToken))
	page.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(html)
	})
	page.Start()
	tab := openPage(t, browser, page.URL+"/")

	var st dashboardState
	read := func(what, cond string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(tab, browserWait)
		defer cancel()
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond,
			chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(0)))
		st, _ = chromedp.Run(ctx, chromedp.Evaluate[dashboardState]("window.state"))
		if err != nil {
			t.Fatalf("waiting for %s: %v; page state %+v", what, err, st)
		}
	}
	read("the streams to open or fail", `state.streamState === EventSource.CLOSED || state.fetchError !== null ||
		(state.opened && state.fetchFirst !== null && state.bareState === EventSource.CLOSED)`)
	if !st.Opened || st.StreamState != nil {
		t.Fatalf("EventSource with ?access_token=: want open without error; page state %+v", st)
	}
	if st.FetchError != nil || st.FetchStatus == nil || *st.FetchStatus != http.StatusOK || !strings.HasPrefix(*st.FetchFirst, "retry:") {
		t.Errorf("fetch with Authorization: want 200 and the stream's first line; page state %+v", st)
	}
	if st.BareState == nil || *st.BareState != 2 {
		t.Errorf("EventSource without a token: want closed (refused); page state %+v", st)
	}

	ev := sessionMessage(t, string(ssetest.Fixture(t, "start-web.json")), "dashboard")
	srv.Publish(t, ev)
	read("the event", `state.received.length >= 1`)
	if len(st.Received) != 1 || st.Received[0] != string(ev) {
		t.Errorf("page received %q, want exactly %q", st.Received, ev)
	}
}
