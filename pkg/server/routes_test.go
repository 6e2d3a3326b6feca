package server_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

func TestWrongMethodGets405WithAllowAndJSONError(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	cases := []struct{ method, path, allow string }{
		{http.MethodGet, "/metrics", "POST, OPTIONS"},
		{http.MethodPut, "/api/events", "POST, OPTIONS"},
		{http.MethodDelete, "/metrics", "POST, OPTIONS"},
		{http.MethodGet, "/api/events", "POST, OPTIONS"},
		{http.MethodPost, "/event-dispatcher", "GET, OPTIONS"},
		{http.MethodPut, "/events", "GET, POST, OPTIONS"},
		{http.MethodPatch, "/event-dispatcher", "GET, OPTIONS"},
		{http.MethodHead, "/events", "GET, POST, OPTIONS"},
		{http.MethodPost, "/health", "GET, HEAD, OPTIONS"},
		{http.MethodDelete, "/health", "GET, HEAD, OPTIONS"},
		{http.MethodPost, "/", "GET, HEAD, OPTIONS"},
		{http.MethodPost, "/viewer/viewer.js", "GET, HEAD, OPTIONS"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			body := []byte(`{"k":"s3cr3t"}`)
			r, err := srv.Do(within(t, 10*time.Second), c.method, c.path, nil, body)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Header.Values("Allow"); len(got) != 1 || got[0] != c.allow {
				t.Errorf("Allow %q, want %q", got, c.allow)
			}
			if c.method == http.MethodHead { // no body to check
				if r.Status != http.StatusMethodNotAllowed {
					t.Errorf("status %d, want 405", r.Status)
				}
				return
			}
			wantError(t, r, http.StatusMethodNotAllowed, "", body)
		})
	}
}

func TestUnknownPathGets404JSONError(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	cases := []struct{ method, path string }{
		{http.MethodGet, "/nope"},
		{http.MethodGet, "/index.html"},
		{http.MethodGet, "/viewer/"},
		{http.MethodGet, "/viewer/index.html"},
		{http.MethodGet, "/viewer/nope.js"},
		{http.MethodPost, "/viewer/nope.js"},
		{http.MethodPost, "/api/events/"},
		{http.MethodPost, "/api/event"},
		{http.MethodGet, "/events/x"},
		{http.MethodGet, "/healthz"},
		{http.MethodPost, "/METRICS"},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			body := []byte(`{"k":"s3cr3t"}`)
			r, err := srv.Do(within(t, 10*time.Second), c.method, c.path, nil, body)
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, r, http.StatusNotFound, "", body)
		})
	}
}

// routeMethods is what each route accepts, as its preflight and 405
// answers must say.
func routeMethods() map[string]string {
	return map[string]string{
		"/metrics":          "POST, OPTIONS",
		"/api/events":       "POST, OPTIONS",
		"/events":           "GET, POST, OPTIONS",
		"/event-dispatcher": "GET, OPTIONS",
		"/health":           "GET, HEAD, OPTIONS",
		"/":                 "GET, HEAD, OPTIONS",
		"/viewer/viewer.js": "GET, HEAD, OPTIONS",
	}
}

func TestPreflightOnEveryRouteAnswers204WithCORSHeaders(t *testing.T) {
	t.Parallel()
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	for path, methods := range routeMethods() {
		t.Run(path, func(t *testing.T) {
			reqMethod := strings.Split(methods, ", ")[0]
			h := http.Header{
				"Origin":                         {"https://player.example"},
				"Access-Control-Request-Method":  {reqMethod},
				"Access-Control-Request-Headers": {"content-type"},
			}
			r, err := srv.Do(within(t, 10*time.Second), http.MethodOptions, path, h, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != http.StatusNoContent || len(r.Body) != 0 {
				t.Errorf("status %d body %q, want 204 and no body", r.Status, r.Body)
			}
			want := map[string]string{
				"Access-Control-Allow-Origin":  "*",
				"Access-Control-Allow-Methods": methods,
				"Access-Control-Max-Age":       "86400",
			}
			for k, v := range want {
				if got := r.Header.Get(k); got != v {
					t.Errorf("%s %q, want %q", k, got, v)
				}
			}
			allowed := strings.Split(r.Header.Get("Access-Control-Allow-Headers"), ", ")
			if !slices.Contains(allowed, "Content-Type") {
				t.Errorf("Access-Control-Allow-Headers %q lacks Content-Type", allowed)
			}
		})
	}
}

// corsRequest is one kind of exchange whose answer must carry CORS headers.
type corsRequest struct {
	name   string
	method string
	path   string
	body   string
	status int
}

func corsRequests() []corsRequest {
	return []corsRequest{
		{"preflight", http.MethodOptions, "/api/events", "", http.StatusNoContent},
		{"accepted event", http.MethodPost, "/api/events", `{"k":"v"}`, http.StatusNoContent},
		{"accepted event on /metrics", http.MethodPost, "/metrics", `{"k":"v"}`, http.StatusNoContent},
		{"bad event", http.MethodPost, "/metrics", `[1]`, http.StatusBadRequest},
		{"too large", http.MethodPost, "/api/events", `{"k":"` + strings.Repeat("x", 200) + `"}`, http.StatusRequestEntityTooLarge},
		{"unknown path", http.MethodGet, "/nope", "", http.StatusNotFound},
		{"wrong method", http.MethodGet, "/metrics", "", http.StatusMethodNotAllowed},
		{"health", http.MethodGet, "/health", "", http.StatusOK},
		{"stream", http.MethodGet, "/events", "", http.StatusOK},
	}
}

// exchange performs r with the given Origin ("" sends none) and returns
// the status and headers; a stream is closed once its headers are in.
func exchange(t *testing.T, srv *ssetest.Server, r corsRequest, origin string) (int, http.Header) {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	if r.path == "/events" {
		s, err := ssetest.Open(within(t, 10*time.Second), srv.Client, srv.URL+r.path, h)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		return s.Resp.StatusCode, s.Resp.Header
	}
	var body []byte
	if r.body != "" {
		body = []byte(r.body)
	}
	resp, err := srv.Do(within(t, 10*time.Second), r.method, r.path, h, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status, resp.Header
}

func TestEveryResponseCarriesCORSHeaders(t *testing.T) {
	t.Parallel()
	anyOrigin := ssetest.Start(t, broadcast.Options{}, server.Options{MaxBodyBytes: 128})
	listed := ssetest.Start(t, broadcast.Options{}, server.Options{
		MaxBodyBytes: 128, AllowOrigins: []string{"https://a.example", "https://b.example"},
	})
	origins := []struct {
		name     string
		srv      *ssetest.Server
		origin   string
		want     string // Access-Control-Allow-Origin; "" for none
		wantVary bool
		refused  bool // 403 for everything but the preflight
	}{
		{"any origin allowed", anyOrigin, "https://player.example", "*", false, false},
		{"any origin allowed, no Origin sent", anyOrigin, "", "*", false, false},
		{"listed origin echoed", listed, "https://a.example", "https://a.example", true, false},
		{"second listed origin echoed", listed, "https://b.example", "https://b.example", true, false},
		{"unlisted origin refused", listed, "https://evil.example", "", true, true},
		{"listed origin with other scheme refused", listed, "http://a.example", "", true, true},
		{"no Origin sent", listed, "", "", true, false},
	}
	for _, o := range origins {
		for _, r := range corsRequests() {
			t.Run(o.name+"/"+r.name, func(t *testing.T) {
				status, h := exchange(t, o.srv, r, o.origin)
				want := r.status
				if o.refused && r.method != http.MethodOptions {
					want = http.StatusForbidden
				}
				if status != want {
					t.Errorf("status %d, want %d", status, want)
				}
				if got := h.Values("Access-Control-Allow-Origin"); (o.want == "" && len(got) != 0) || (o.want != "" && (len(got) != 1 || got[0] != o.want)) {
					t.Errorf("Access-Control-Allow-Origin %q, want %q", got, o.want)
				}
				if got := slices.Contains(h.Values("Vary"), "Origin"); got != o.wantVary {
					t.Errorf("Vary %q, want Origin in it: %v", h.Values("Vary"), o.wantVary)
				}
				if got := h.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Retry-After") {
					t.Errorf("Access-Control-Expose-Headers %q lacks Retry-After", got)
				}
			})
		}
	}
}
