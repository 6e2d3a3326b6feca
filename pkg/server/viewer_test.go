package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/server/viewer"
)

// TestViewerServedWithStrictCSP: the page and every asset come with the
// Content-Security-Policy and revalidate by ETag.
func TestViewerServedWithStrictCSP(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	paths := append([]string{"/"}, viewer.AssetPaths()...)
	if len(paths) < 4 {
		t.Fatalf("assets %q: want the script, stylesheet and icon", paths)
	}
	types := map[string]string{"/": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
	for _, p := range paths {
		r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, p, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := types[filepath.Ext(p)]
		if p == "/" {
			want = types["/"]
		}
		if r.Status != http.StatusOK || len(r.Body) == 0 || !strings.HasPrefix(r.Header.Get("Content-Type"), want) {
			t.Errorf("GET %s: status %d, %d bytes, Content-Type %q; want 200, a body, %s", p, r.Status, len(r.Body), r.Header.Get("Content-Type"), want)
		}
		if got := r.Header.Get("Content-Security-Policy"); got != viewer.CSP || !strings.Contains(got, "default-src 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, got)
		}
		for name, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
			if got := r.Header.Get(name); got != want {
				t.Errorf("GET %s: %s %q, want %q", p, name, got, want)
			}
		}
		again, err := srv.Do(within(t, 10*time.Second), http.MethodGet, p, http.Header{"If-None-Match": {r.Header.Get("ETag")}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if again.Status != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: status %d, want 304", p, again.Status)
		}
	}
}

// viewerTab is the viewer open in a browser tab, with every request the
// tab sent and every error it reported.
type viewerTab struct {
	ctx context.Context

	mu       sync.Mutex
	requests []string
	errors   []string // uncaught exceptions and error-level console entries
}

// openViewer opens url in a new tab of the given size, recording from
// before the navigation.
func openViewer(t *testing.T, browser context.Context, url string, width, height int64, dark bool) *viewerTab {
	t.Helper()
	v := &viewerTab{}
	tab, closeTab := chromedp.NewContext(browser, chromedp.WithListener(v.record))
	t.Cleanup(closeTab)
	if err := chromedp.Do(tab); err != nil { // the tab lives as long as its own context
		t.Fatalf("opening a tab: %v", err)
	}
	v.ctx = tab
	scheme := "light"
	if dark {
		scheme = "dark"
	}
	ctx, cancel := context.WithTimeout(tab, browserWait)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, height), chromedp.Navigate(url)); err != nil {
		t.Fatalf("loading %s: %v", url, err)
	}
	return v
}

// record runs on the tab's event loop: it only appends.
func (v *viewerTab) record(ev any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		v.requests = append(v.requests, ev.Request.URL)
	case *runtime.EventExceptionThrown:
		v.errors = append(v.errors, "exception: "+ev.ExceptionDetails.Text+" "+fmt.Sprint(ev.ExceptionDetails.Exception))
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			v.errors = append(v.errors, string(ev.Entry.Source)+": "+ev.Entry.Text)
		}
	}
}

// checkOrigin fails the test if the tab sent any request outside origin,
// or reported an error other than ones from source ignore (e.g. "network"
// for an expected 401).
func (v *viewerTab) checkOrigin(t *testing.T, origin, ignore string) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.requests) < 3 {
		t.Errorf("the tab sent %d requests %q: the recording missed the page's own", len(v.requests), v.requests)
	}
	for _, u := range v.requests {
		if !strings.HasPrefix(u, origin+"/") {
			t.Errorf("request left the origin %s: %s", origin, u)
		}
	}
	for _, e := range v.errors {
		if ignore == "" || !strings.HasPrefix(e, ignore+":") {
			t.Errorf("page error: %s", e)
		}
	}
}

// viewerState is what the page shows: the connection state, the filter
// of the open stream, the rows (the first five, and how many) and the
// counter line.
type viewerState struct {
	State    string     `json:"state"`
	Query    *string    `json:"query"`
	RowCount int        `json:"rowCount"`
	Rows     [][]string `json:"rows"`
	Count    string     `json:"count"`
	Rate     string     `json:"rate"`
	Notice   string     `json:"notice"`
	Token    bool       `json:"token"`
}

const viewerStateJS = `(() => {
	const rows = [...document.querySelectorAll("#events tbody tr")];
	const st = document.getElementById("state");
	return {state: st.dataset.state, query: st.dataset.query ?? null, rowCount: rows.length,
		rows: rows.slice(0, 5).map(tr => [...tr.cells].map(c => c.textContent)),
		count: document.getElementById("count").textContent,
		rate: document.getElementById("rate").textContent,
		notice: document.getElementById("notice").textContent,
		token: !document.getElementById("token").hidden};
})()`

// eval runs JavaScript in the tab and decodes its result.
func eval[T any](t *testing.T, v *viewerTab, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(v.ctx, 10*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %.60q: %v", js, err)
	}
	return out
}

// wait polls the page until cond (JavaScript over the viewerState s)
// holds, and returns that state.
func (v *viewerTab) wait(t *testing.T, what, cond string) viewerState {
	t.Helper()
	ctx, cancel := context.WithTimeout(v.ctx, browserWait)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void]("(s => "+cond+")("+viewerStateJS+")",
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(0)))
	st := eval[viewerState](t, v, viewerStateJS)
	if err != nil {
		t.Fatalf("waiting for %s: %v; page shows %+v", what, err, st)
	}
	return st
}

// viewerEvent is a real player message with the given event name and
// session id.
func viewerEvent(t *testing.T, fixture, session string) []byte {
	t.Helper()
	return []byte(compact(t, sessionMessage(t, string(ssetest.Fixture(t, fixture)), session)))
}

// TestViewerInBrowser drives the viewer in headless Chromium: it loads
// with no request leaving the origin, shows events POSTed after load
// newest first, opens one pretty-printed, narrows to a session with the
// filter input (server-side), stops updating while paused, and holds its
// row cap after thousands of events.
func TestViewerInBrowser(t *testing.T) {
	browser := startChromium(t)
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 200 * time.Millisecond}, server.Options{})
	v := openViewer(t, browser, srv.URL+"/", 1280, 800, false)
	v.wait(t, "the stream connected", `s.state === "connected" && s.query === ""`)

	// Events POSTed after load, newest first.
	sent := [][]byte{
		viewerEvent(t, "start.json", "viewer-1"),
		viewerEvent(t, "error.json", "viewer-2"),
		viewerEvent(t, "stop.json", "viewer-3"),
	}
	for _, ev := range sent {
		srv.Publish(t, ev)
	}
	st := v.wait(t, "three rows", `s.rowCount >= 3`)
	if st.RowCount != 3 {
		t.Fatalf("rows: %d, want 3: %+v", st.RowCount, st.Rows)
	}
	for i, want := range [][2]string{{"STOP", "viewer-3"}, {"ERROR", "viewer-2"}, {"START", "viewer-1"}} {
		if r := st.Rows[i]; r[1] != want[0] || r[2] != want[1] || len(r[0]) != len("15:04:05.000") || r[3] == "" {
			t.Errorf("row %d: %q, want time, %s, %s and a summary", i, r, want[0], want[1])
		}
	}

	// A click shows the whole event, pretty-printed.
	pretty := eval[string](t, v, `document.querySelector("#events tbody tr:nth-child(2)").click();
		document.getElementById("detail").open ? document.getElementById("detail-json").textContent : ""`)
	var got, want any
	if err := json.Unmarshal([]byte(pretty), &got); err != nil || !strings.Contains(pretty, "\n  \"") {
		t.Errorf("detail %.100q is not the event pretty-printed: %v", pretty, err)
	}
	_ = json.Unmarshal(sent[1], &want)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("detail shows %v, want %v", got, want)
	}
	eval[bool](t, v, `document.getElementById("detail-close").click(); !document.getElementById("detail").open`)

	// The filter input reconnects with a server-side filter: only that
	// session's events arrive, in order.
	eval[bool](t, v, `document.getElementById("clear").click();
		document.querySelector("[name=session_id]").value = "viewer-b";
		document.getElementById("filters").requestSubmit(); true`)
	v.wait(t, "the filtered stream connected", `s.state === "connected" && s.query === "session_id=viewer-b"`)
	if loc := eval[string](t, v, `location.search`); loc != "?session_id=viewer-b" {
		t.Errorf("page URL query %q: want the filter, to share the view", loc)
	}
	srv.Publish(t, viewerEvent(t, "start.json", "viewer-a"))
	srv.Publish(t, viewerEvent(t, "error.json", "viewer-b"))
	srv.Publish(t, viewerEvent(t, "start.json", "viewer-a"))
	srv.Publish(t, viewerEvent(t, "stop.json", "viewer-b"))
	st = v.wait(t, "the last event of session viewer-b", `s.rowCount > 0 && s.rows[0][1] === "STOP"`)
	if st.RowCount != 2 || st.Rows[0][2] != "viewer-b" || st.Rows[1][2] != "viewer-b" || st.Rows[1][1] != "ERROR" {
		t.Fatalf("filtered rows %d: %q, want exactly viewer-b's STOP and ERROR", st.RowCount, st.Rows)
	}

	// Paused: events are counted, the table stays as it is.
	eval[bool](t, v, `document.getElementById("pause").click(); true`)
	srv.Publish(t, viewerEvent(t, "heartbeat.json", "viewer-b"))
	st = v.wait(t, "the paused page counting one new event", `s.count.includes("paused, 1 new")`)
	if st.RowCount != 2 || st.Rows[0][1] != "STOP" {
		t.Fatalf("paused page changed its rows: %d %q", st.RowCount, st.Rows)
	}
	eval[bool](t, v, `document.getElementById("pause").click(); true`)
	st = v.wait(t, "the held event shown on resume", `s.rowCount === 3`)
	if st.Rows[0][1] != "HEARTBEAT" {
		t.Errorf("after resume, top row %q: want the event held while paused", st.Rows[0])
	}

	// Thousands of events: the table keeps its cap.
	eval[bool](t, v, `document.querySelector("[name=session_id]").value = "";
		document.getElementById("filters").requestSubmit(); true`)
	v.wait(t, "the unfiltered stream connected", `s.state === "connected" && s.query === ""`)
	const many, capRows = 3000, 500
	publishMany(t, srv, viewerEvent(t, "heartbeat.json", "viewer-many"), many)
	srv.Publish(t, viewerEvent(t, "stop.json", "viewer-last"))
	st = v.wait(t, "the last of thousands of events", `s.rowCount > 0 && s.rows[0][2] === "viewer-last"`)
	if st.RowCount != capRows || !strings.HasPrefix(st.Count, fmt.Sprintf("%d events shown", capRows)) {
		t.Errorf("after %d events: %d rows (%q), want the cap of %d", many+1, st.RowCount, st.Count, capRows)
	}

	v.checkOrigin(t, srv.URL, "")
}

// publishMany posts n copies of body from a few concurrent publishers.
func publishMany(t *testing.T, srv *ssetest.Server, body []byte, n int) {
	t.Helper()
	const publishers = 8
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := p; i < n; i += publishers {
				r, err := srv.Post(within(t, 10*time.Second), "/api/events", "application/json", body)
				if err != nil || r.Status != http.StatusNoContent {
					t.Errorf("POST %d: %v %d", i, err, r.Status)
					return
				}
			}
		})
	}
	wg.Wait()
}

// streamGate serves srv behind a front that answers GET /events with
// status, one header and a JSON error whenever refuse says so, as a
// restarting service would.
func streamGate(t *testing.T, srv *ssetest.Server, status int, header, value, msg string, refuse func(*http.Request) bool) *httptest.Server {
	t.Helper()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" && refuse(r) {
			w.Header().Set(header, value)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = fmt.Fprintf(w, `{"error":%s}`, jsString(msg))
			return
		}
		srv.Server.ServeHTTP(w, r)
	}))
	// Cleanups run last-in first-out: cut the page's stream, then close.
	t.Cleanup(front.Close)
	t.Cleanup(front.CloseClientConnections)
	return front
}

// TestViewerAsksForToken: when the stream needs a listener token (401),
// the page asks for one, keeps it in the tab's sessionStorage only, and
// connects with it.
func TestViewerAsksForToken(t *testing.T) {
	browser := startChromium(t)
	const token = "t0k3n-for-the-tab"
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 200 * time.Millisecond},
		server.Options{Access: access.Policy{Listeners: access.NewAuth([]string{token}, nil)}})

	v := openViewer(t, browser, srv.URL+"/", 1280, 800, false)
	v.wait(t, "the token prompt", `s.state === "token" && s.token`)
	eval[bool](t, v, `document.querySelector("[name=token]").value = "wrong";
		document.getElementById("token").requestSubmit(); true`)
	st := v.wait(t, "the prompt again, saying the token was refused", `s.state === "token" && s.token && s.notice !== ""`)
	if !strings.Contains(st.Notice, "refused") {
		t.Errorf("notice %q: want it to say the token was refused", st.Notice)
	}
	eval[bool](t, v, `document.querySelector("[name=token]").value = `+jsString(token)+`;
		document.getElementById("token").requestSubmit(); true`)
	v.wait(t, "the stream connected with the token", `s.state === "connected" && !s.token`)

	srv.Publish(t, viewerEvent(t, "start.json", "viewer-token"))
	v.wait(t, "the event", `s.rowCount === 1 && s.rows[0][2] === "viewer-token"`)
	kept := eval[[]string](t, v, `[sessionStorage.getItem("event-dispatcher.access_token") || "",
		localStorage.length + "", location.href, document.cookie]`)
	if kept[0] != token || kept[1] != "0" || strings.Contains(kept[2], token) || kept[3] != "" {
		t.Errorf("token storage: sessionStorage %q, localStorage entries %s, URL %q, cookies %q; want it in sessionStorage only",
			kept[0], kept[1], kept[2], kept[3])
	}
	v.checkOrigin(t, srv.URL, "network") // the 401s are logged as network errors
}

// TestViewerScreenshots renders the viewer with real player messages, wide
// in light mode and phone-sized in dark mode, checks each screenshot is not
// blank, that the colour scheme follows the system's, and that a phone
// needs no sideways scrolling. The PNGs go to a temporary directory; with
// VIEWER_SCREENSHOTS=<dir> (docs/ for the README) they are written there.
//
// The service here lists only another origin in CORS_ALLOWED_ORIGINS: the
// page is same-origin, so that must not keep it from its stream.
func TestViewerScreenshots(t *testing.T) {
	browser := startChromium(t)
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 200 * time.Millisecond},
		server.Options{AllowOrigins: []string{"https://player.example"}})
	dir := os.Getenv("VIEWER_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	for _, tc := range []struct {
		file          string
		width, height int64
		dark          bool
	}{
		{"viewer.png", 1280, 720, false},
		{"viewer-phone-dark.png", 390, 760, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			v := openViewer(t, browser, srv.URL+"/", tc.width, tc.height, tc.dark)
			v.wait(t, "the stream connected", `s.state === "connected"`)
			publishTraffic(t, srv)
			v.wait(t, "the traffic shown", `s.rowCount >= 14`)
			// The rate shown counts the last second only: on a loaded
			// machine the traffic may be over before the page is looked
			// at, so a trickle goes on until a rate shows.
			ssetest.Eventually(t, browserWait, "a rate shown", func() (bool, string) {
				st := eval[viewerState](t, v, viewerStateJS)
				if st.Rate == "0" {
					srv.Publish(t, viewerEvent(t, "heartbeat.json", "ebdb3da7-bc77-454e-9de0-a1dfa8091e84"))
					time.Sleep(300 * time.Millisecond)
				}
				return st.Rate != "0", st.Rate
			})
			if overflow := eval[bool](t, v, `document.documentElement.scrollWidth > innerWidth`); overflow {
				t.Errorf("%dpx wide: the page scrolls sideways", tc.width)
			}
			ctx, cancel := context.WithTimeout(v.ctx, browserWait)
			defer cancel()
			shot, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatal(err)
			}
			checkScreenshot(t, shot, tc.dark)
			if err := os.WriteFile(filepath.Join(dir, tc.file), shot, 0o644); err != nil {
				t.Fatal(err)
			}
			v.checkOrigin(t, srv.URL, "")
		})
	}
}

// publishTraffic sends a few seconds of realistic traffic: sessions
// starting, heartbeating, failing and stopping, at an uneven rate so the
// chart has something to show.
func publishTraffic(t *testing.T, srv *ssetest.Server) {
	t.Helper()
	sessions := []string{
		"ebdb3da7-bc77-454e-9de0-a1dfa8091e84", "5f0e3c1a-9d8b-4f5e-a2c7-3b1d6e8f9a04",
		"c4a9e2d1-7b3f-4e6a-8d5c-1f2e3a4b5c6d", "9b8a7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d",
	}
	script := []struct{ fixture, session string }{
		{"start.json", sessions[0]}, {"start-web.json", sessions[1]}, {"heartbeat.json", sessions[0]},
		{"start.json", sessions[2]}, {"heartbeat.json", sessions[1]}, {"error.json", sessions[2]},
		{"heartbeat.json", sessions[0]}, {"start-web.json", sessions[3]}, {"heartbeat.json", sessions[1]},
		{"stop.json", sessions[0]}, {"heartbeat.json", sessions[3]}, {"heartbeat.json", sessions[1]},
		{"error.json", sessions[3]}, {"stop.json", sessions[1]},
	}
	perSecond := []int{2, 5, 3, 4}
	i := 0
	for _, n := range perSecond {
		for range n {
			if i < len(script) {
				srv.Publish(t, viewerEvent(t, script[i].fixture, script[i].session))
				i++
			}
		}
		time.Sleep(time.Second)
	}
}

// checkScreenshot fails unless shot is a PNG with real content: many
// colours, a good share of pixels unlike the background, and a background
// that is light or dark as asked.
func checkScreenshot(t *testing.T, shot []byte, dark bool) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	bg := img.At(b.Max.X-3, b.Max.Y-3) // bottom right: page background
	colours := map[[3]uint32]bool{}
	differ := 0
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
			if img.At(x, y) != bg {
				differ++
			}
		}
	}
	total := (b.Dx() / 2) * (b.Dy() / 2)
	if len(colours) < 32 || differ < total/50 {
		t.Errorf("screenshot looks blank: %d colours, %d of %d pixels unlike the background", len(colours), differ, total)
	}
	r, g, bl, _ := bg.RGBA()
	lum := (r>>8)*3 + (g>>8)*6 + (bl >> 8)
	if isDark := lum < 10*128; isDark != dark {
		t.Errorf("background %v: dark %v, want %v", bg, isDark, dark)
	}
}

// TestViewerReconnects: when its stream is cut and the service then
// answers 503 for a while (a restart), the page says it is reconnecting,
// keeps trying, and shows events again once the stream is back.
func TestViewerReconnects(t *testing.T) {
	browser := startChromium(t)
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 200 * time.Millisecond}, server.Options{})
	var refuse atomic.Bool
	var refused atomic.Int64
	front := streamGate(t, srv, http.StatusServiceUnavailable, "Retry-After", "1", "the service is shutting down",
		func(*http.Request) bool {
			no := refuse.Load()
			if no {
				refused.Add(1)
			}
			return no
		})

	v := openViewer(t, browser, front.URL+"/", 1280, 800, false)
	v.wait(t, "the stream connected", `s.state === "connected"`)
	refuse.Store(true)
	front.CloseClientConnections()
	v.wait(t, "the page saying it reconnects", `s.state === "reconnecting"`)
	// Refused: the probe after the cut, EventSource's own retry and the
	// probe after it. EventSource gives up on a 503, so a fourth is the
	// page retrying by itself.
	ssetest.Eventually(t, browserWait, "the page retrying after 503s", func() (bool, string) {
		return refused.Load() >= 4, fmt.Sprintf("%d refused", refused.Load())
	})
	if st := eval[viewerState](t, v, viewerStateJS); st.State != "reconnecting" {
		t.Errorf("state %q while refused, want reconnecting", st.State)
	}
	refuse.Store(false)
	v.wait(t, "the stream back", `s.state === "connected"`)
	srv.Publish(t, viewerEvent(t, "start.json", "viewer-back"))
	v.wait(t, "an event after reconnecting", `s.rowCount === 1 && s.rows[0][2] === "viewer-back"`)
	v.checkOrigin(t, front.URL, "network") // the cut and the 503s are logged as network errors
}

// connectedViewer starts a service and Chromium, and opens the page at path
// until its stream is connected.
func connectedViewer(t *testing.T, path string) (*ssetest.Server, *viewerTab) {
	t.Helper()
	browser := startChromium(t)
	srv := ssetest.Start(t, broadcast.Options{Heartbeat: 200 * time.Millisecond}, server.Options{})
	v := openViewer(t, browser, srv.URL+path, 1280, 800, false)
	v.wait(t, "the stream connected", `s.state === "connected" && s.query !== null`)
	return srv, v
}

// TestViewerFilterAlternatives: comma-separated alternatives typed into a
// filter input, or repeated in the page's URL, reach the server as
// alternatives (a literal comma, not %2C, which would be one value holding a
// comma), while a parameter of the page's URL is passed on byte for byte,
// its %2C still a comma inside the value.
func TestViewerFilterAlternatives(t *testing.T) {
	srv, v := connectedViewer(t, "/?event_name=START&event_name=ERROR&label=x%2Cy")
	if st := eval[viewerState](t, v, viewerStateJS); *st.Query != "label=x%2Cy&event_name=START,ERROR" {
		t.Errorf("stream query %q: want the URL's label as written and both event names as alternatives", *st.Query)
	}
	if got := eval[string](t, v, `document.querySelector("[name=event_name]").value`); got != "START,ERROR" {
		t.Errorf("event_name input %q: want both values of the URL", got)
	}
	label := func(fixture, session, label string) []byte {
		return ssetest.WithMembers(viewerEvent(t, fixture, session), `"label":`+jsString(label))
	}
	srv.Publish(t, label("start.json", "kept-start", "x,y"))
	srv.Publish(t, label("stop.json", "other-name", "x,y"))
	srv.Publish(t, label("start.json", "other-label", "x"))
	srv.Publish(t, label("error.json", "kept-error", "x,y"))
	st := v.wait(t, "the ERROR row", `s.rowCount > 0 && s.rows[0][2] === "kept-error"`)
	if st.RowCount != 2 || st.Rows[1][2] != "kept-start" {
		t.Fatalf("rows %q: want exactly kept-error and kept-start", st.Rows)
	}

	// Typed, with spaces around the comma.
	eval[bool](t, v, `document.getElementById("clear").click();
		document.querySelector("[name=event_name]").value = " STOP , ERROR ";
		document.getElementById("filters").requestSubmit(); true`)
	v.wait(t, "the new filter connected", `s.state === "connected" && s.query === "label=x%2Cy&event_name=STOP,ERROR"`)
	if loc := eval[string](t, v, `location.search`); loc != "?label=x%2Cy&event_name=STOP,ERROR" {
		t.Errorf("page URL query %q: want the same filter as the stream's", loc)
	}
	srv.Publish(t, label("start.json", "not-typed", "x,y"))
	srv.Publish(t, label("stop.json", "typed-stop", "x,y"))
	srv.Publish(t, label("error.json", "typed-error", "x,y"))
	st = v.wait(t, "the typed ERROR row", `s.rowCount > 0 && s.rows[0][2] === "typed-error"`)
	if st.RowCount != 2 || st.Rows[1][2] != "typed-stop" {
		t.Fatalf("rows %q: want exactly typed-error and typed-stop", st.Rows)
	}
	v.checkOrigin(t, srv.URL, "")
}

// TestViewerHostileEvents: whatever a publisher puts in an event, the page
// runs none of it, shows it a row like any other and keeps drawing the
// events after it. A deeply nested event used to overflow the call stack
// while summarising, which held every later row back; a right-to-left
// override could reorder the rest of the summary; a 60 kB string filled its
// cell.
func TestViewerHostileEvents(t *testing.T) {
	srv, v := connectedViewer(t, "/")
	nested := strings.Repeat("[", 9990) + strings.Repeat("]", 9990) // just within encoding/json's depth limit
	hostile := []string{
		`{"event_name":"<script>window.pwned=1</script>","session_id":"\"><img src=x onerror=\"window.pwned=2\">",` +
			`"url":"javascript:window.pwned=3","html":"<svg onload=window.pwned=4>"}`,
		`{"event_name":"RTL","session_id":"rtl","a":"\u202eevil","b":"after"}`,
		`{"event_name":"BIG","session_id":"big","s":"` + strings.Repeat("x", 60000) + `"}`,
		`{"event_name":"DEEP","session_id":"deep","x":` + nested + `}`,
		`{"event_name":` + nested + `,"session_id":"deep-name"}`,
		`{"event_name":"LAST","session_id":"last","timestamp":1e300,"__proto__":{"polluted":1}}`,
	}
	for _, b := range hostile {
		srv.Publish(t, []byte(b))
	}
	st := v.wait(t, "the event after the hostile ones", `s.rowCount > 0 && s.rows[0][2] === "last"`)
	if st.RowCount != len(hostile) {
		t.Fatalf("%d rows, want one per event, %d: %q", st.RowCount, len(hostile), st.Rows)
	}
	got := eval[map[string]any](t, v, `(() => {
		const rows = [...document.querySelectorAll("#events tbody tr")].reverse();
		return {pwned: window.pwned ?? null, polluted: ({}).polluted ?? null,
			elements: document.querySelectorAll("#events tbody img, #events tbody script, #events tbody svg").length,
			xss: [...rows[0].cells].map(c => c.textContent),
			rtl: rows[1].cells[3].textContent,
			big: rows[2].cells[3].textContent.length,
			deep: rows[3].cells[3].textContent};
	})()`)
	if got["pwned"] != nil || got["polluted"] != nil || got["elements"] != float64(0) {
		t.Errorf("page ran event content: pwned %v, polluted %v, %v elements made from events", got["pwned"], got["polluted"], got["elements"])
	}
	if xss := fmt.Sprint(got["xss"]); !strings.Contains(xss, "<script>window.pwned=1</script>") || !strings.Contains(xss, `"><img src=x`) {
		t.Errorf("XSS row %s: want the markup shown as text", xss)
	}
	if rtl := got["rtl"].(string); rtl != `a=\u202eevil · b=after` {
		t.Errorf("RTL summary %q: want the override shown as \\u202e", rtl)
	}
	if big := got["big"].(float64); big > 400 {
		t.Errorf("the 60 kB value fills its cell with %v characters", big)
	}
	if deep := got["deep"].(string); !strings.HasPrefix(deep, "x.0.0.") || !strings.HasSuffix(deep, "=…") {
		t.Errorf("nested summary %.80q: want the path down to where it stops, =…", deep)
	}
	// The deep event opens in full.
	shown := eval[string](t, v, `document.querySelectorAll("#events tbody tr")[2].click();
		document.getElementById("detail").open ? document.getElementById("detail-json").textContent : ""`)
	if !strings.Contains(shown, `"DEEP"`) || !strings.Contains(shown, "[[[[") {
		t.Errorf("detail of the nested event: %.80q", shown)
	}
	v.checkOrigin(t, srv.URL, "")
}

// TestViewerCSPEnforced: the policy the page is served with is the one the
// browser enforces. Markup that reached the DOM anyway (a future bug) could
// run no inline script or handler and load nothing from another origin.
func TestViewerCSPEnforced(t *testing.T) {
	_, v := connectedViewer(t, "/")
	eval[bool](t, v, `window.violations = [];
		document.addEventListener("securitypolicyviolation", e => violations.push(e.violatedDirective));
		document.body.insertAdjacentHTML("beforeend", '<img src="/no-such-image" onerror="window.ran = 1">');
		const s = document.createElement("script"); s.textContent = "window.ran = 2"; document.body.append(s);
		document.body.insertAdjacentHTML("beforeend", '<img src="http://example.invalid/x.png">');
		fetch("http://example.invalid/").catch(() => {}); true`)
	ctx, cancel := context.WithTimeout(v.ctx, browserWait)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](`window.violations.length >= 4`,
		chromedp.WithPollingInterval(10*time.Millisecond))); err != nil {
		t.Fatalf("waiting for four CSP violations: %v; got %v", err, eval[[]string](t, v, `window.violations`))
	}
	if ran := eval[any](t, v, `window.ran ?? null`); ran != nil {
		t.Errorf("inline code ran (%v) despite the policy", ran)
	}
	got := strings.Join(eval[[]string](t, v, `window.violations`), " ")
	for _, want := range []string{"script-src-attr", "script-src-elem", "img-src", "connect-src"} {
		if !strings.Contains(got, want) {
			t.Errorf("violations %q: want one of %s", got, want)
		}
	}
}
