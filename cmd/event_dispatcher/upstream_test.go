package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/brokertest"
	"event-dispatcher/internal/ssetest"
)

type upstreamHealth struct {
	Upstreams []struct {
		URL        string `json:"url"`
		State      string `json:"state"`
		Events     uint64 `json:"events"`
		Dropped    uint64 `json:"dropped"`
		LastEvent  string `json:"last_event"`
		Reconnects uint64 `json:"reconnects"`
	} `json:"upstreams"`
}

func (r *replica) upstreams(t *testing.T) upstreamHealth {
	t.Helper()
	var h upstreamHealth
	if err := json.Unmarshal([]byte(get(t, r.base+"/health")), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

func waitUpstream(t *testing.T, r *replica, cond func(upstreamHealth) bool) upstreamHealth {
	t.Helper()
	var h upstreamHealth
	ssetest.Eventually(t, 30*time.Second, "upstream state", func() (bool, string) {
		h = r.upstreams(t)
		return len(h.Upstreams) == 1 && cond(h), fmt.Sprintf("%+v", h)
	})
	return h
}

// An edge dispatcher follows a central one: its listeners get every event
// posted to the central one, in order, as compact and with the client IP
// the central one set; the credentials in the URL never show.
func TestRelayServesAnotherDispatchersListeners(t *testing.T) {
	central := startReplicas(t, 1)[0]
	hostPort := strings.TrimPrefix(central.base, "http://")
	edge := startReplicas(t, 1,
		"UPSTREAM_URLS=http://relay:hunter2@"+hostPort+"/events?access_token=tok-s3cr3t-0123456789",
		"UPSTREAM_USER_AGENT=edge-test/1.0 (ops@example.org)",
	)[0]
	waitUpstream(t, edge, func(h upstreamHealth) bool { return h.Upstreams[0].State == "connected" })
	client := &http.Client{}
	listener := collect(t, client, edge.base)
	ssetest.Eventually(t, 30*time.Second, "the edge listener", func() (bool, string) {
		h, _ := edge.health(t)
		return strings.Contains(get(t, edge.base+"/health"), `"listeners":1`), fmt.Sprint(h)
	})
	const n = 20
	var wantLines []string
	for seq := range n {
		if code, err := postEvent(client, central.base, 0, 0, seq); err != nil || code != http.StatusNoContent {
			t.Fatalf("POST %d: %d %v", seq, code, err)
		}
		wantLines = append(wantLines, want(0, 0, seq))
	}
	ssetest.Eventually(t, 30*time.Second, "every event at the edge", func() (bool, string) {
		return len(listener.lines()) >= n, fmt.Sprint(listener.lines(), get(t, edge.base+"/health"))
	})
	if got := listener.lines(); !slices.Equal(got, wantLines) {
		t.Fatalf("edge listener got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLines, "\n"))
	}
	h := waitUpstream(t, edge, func(h upstreamHealth) bool { return h.Upstreams[0].Events == n })
	shown := "http://" + hostPort + "/events?access_token=redacted"
	if u := h.Upstreams[0]; u.URL != shown || u.LastEvent == "" || u.Dropped != 0 {
		t.Errorf("/health upstream %+v, want url %s", u, shown)
	}
	m := ssetest.Scrape(t, edge.admin+"/metrics")
	for series, want := range map[string]float64{
		`event_dispatcher_upstream_events_total{outcome="accepted",upstream="` + shown + `"}`: n,
		`event_dispatcher_upstream_connected{upstream="` + shown + `"}`:                       1,
		`event_dispatcher_door_events_total{door="upstream",outcome="accepted"}`:              n,
	} {
		if got := m.Samples[series]; got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, secret := range []string{"hunter2", "tok-s3cr3t"} {
		if strings.Contains(edge.logs.String(), secret) {
			t.Errorf("the edge's log shows %q", secret)
		}
	}
}

// Three replicas share a broker; a fourth, with the same broker, follows
// the upstream. Every listener of every replica gets each upstream event
// exactly once, in order.
func TestRelayingReplicaDeliversOncePerListener(t *testing.T) {
	redis := brokertest.Redis(t)
	release := make(chan struct{})
	const n = 30
	feed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		for seq := range n {
			fmt.Fprintf(w, "event: message\nid: %d\ndata: {\"seq\":\ndata: %d}\n\n", seq, seq)
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(feed.Close)
	t.Cleanup(feed.CloseClientConnections)
	replicas := startReplicas(t, 3, "BROKER_URL="+redis.URL)
	relaying := startReplicas(t, 1, "BROKER_URL="+redis.URL, "UPSTREAM_URLS="+feed.URL)[0]
	if recs := relaying.logs.records("UPSTREAM_URLS with BROKER_URL: this replica publishes every upstream event to all replicas; set UPSTREAM_URLS on ONE replica only (e.g. a dedicated one-replica deployment), or each listener gets each event once per replica following it"); len(recs) != 1 {
		t.Errorf("no warning about following an upstream with a broker")
	}
	all := append(replicas, relaying)
	waitBroker(t, all, "connected", 30*time.Second)
	waitUpstream(t, relaying, func(h upstreamHealth) bool { return h.Upstreams[0].State == "connected" })
	client := &http.Client{}
	var listeners []*collector
	for _, r := range all {
		listeners = append(listeners, collect(t, client, r.base), collect(t, client, r.base))
	}
	close(release)
	var wantLines []string
	for seq := range n {
		wantLines = append(wantLines, fmt.Sprintf(`{"seq":%d}`, seq))
	}
	for i, l := range listeners {
		ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("listener %d", i), func() (bool, string) {
			return len(l.lines()) >= n, fmt.Sprint(l.lines())
		})
	}
	// A second copy would have come from the broker with the first: give
	// stragglers the time of one more round trip through it.
	for seq := range 3 {
		if code, err := postEvent(client, replicas[0].base, 9, 9, seq); err != nil || code != http.StatusNoContent {
			t.Fatalf("POST: %d %v", code, err)
		}
	}
	for i, l := range listeners {
		ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("listener %d marker", i), func() (bool, string) {
			return len(l.lines()) >= n+3, fmt.Sprint(l.lines())
		})
		if got := l.lines()[:n]; !slices.Equal(got, wantLines) {
			t.Errorf("listener %d (replica %d) got %q", i, i/2, l.lines())
		}
		if len(l.lines()) != n+3 {
			t.Errorf("listener %d got %d events, want %d", i, len(l.lines()), n+3)
		}
	}
}

// SIGTERM closes the upstream connection first and still shuts down
// completely; the binary sends the User-Agent it was given.
func TestShutdownClosesUpstreamConnections(t *testing.T) {
	agents := make(chan string, 4)
	closed := make(chan struct{}, 4)
	feed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agents <- r.Header.Get("User-Agent")
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		closed <- struct{}{}
	}))
	t.Cleanup(feed.Close)
	p := startProcess(t, nil, "PORT=0", "UPSTREAM_URLS="+feed.URL)
	p.listening(t)
	select {
	case ua := <-agents:
		if ua != "event-dispatcher/"+testVersion {
			t.Errorf("User-Agent %q, want the default event-dispatcher/%s", ua, testVersion)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the binary never connected upstream")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 30*time.Second, "an upstream connection")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Error("the upstream connection outlived the process")
	}
}

// The central dispatcher is killed (SIGKILL: no clean end of stream) and
// started again on its port: the edge notices, reconnects by itself and
// relays what the new process accepts.
func TestRelayReconnectsAfterTheUpstreamIsKilled(t *testing.T) {
	first := startProcess(t, nil, "PORT=0", "CLIENT_IP_FIELD=user_ip")
	_, base := first.listening(t)
	port := base[strings.LastIndex(base, ":")+1:]
	edge := startReplicas(t, 1, "UPSTREAM_URLS="+base+"/events", "UPSTREAM_IDLE_TIMEOUT=2s")[0]
	waitUpstream(t, edge, func(h upstreamHealth) bool { return h.Upstreams[0].State == "connected" })
	client := &http.Client{}
	listener := collect(t, client, edge.base)

	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.exit(t, 30*time.Second)
	second := startProcess(t, nil, "PORT="+port, "CLIENT_IP_FIELD=user_ip")
	second.listening(t)
	h := waitUpstream(t, edge, func(h upstreamHealth) bool {
		return h.Upstreams[0].State == "connected" && h.Upstreams[0].Reconnects >= 1
	})
	if code, err := postEvent(client, base, 1, 0, 7); err != nil || code != http.StatusNoContent {
		t.Fatalf("POST to the restarted upstream: %d %v", code, err)
	}
	ssetest.Eventually(t, 30*time.Second, "the event at the edge", func() (bool, string) {
		return len(listener.lines()) >= 1, fmt.Sprint(listener.lines(), h)
	})
	if got := listener.lines(); len(got) != 1 || got[0] != want(1, 0, 7) {
		t.Errorf("edge listener got %q", got)
	}
}
