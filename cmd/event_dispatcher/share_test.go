package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// h2cFrom is an HTTP/2 client (prior knowledge, no TLS) whose connections
// come from the loopback address ip: its streams share one connection.
func h2cFrom(t *testing.T, ip string) *http.Client {
	c := ssetest.H2CClient(t, 0)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c.Transport.(*http.Transport).DialContext = d.DialContext
	return c
}

// By default one address may hold every listener slot but a reserve of
// 1 % kept for others, however it multiplexes its streams: one HTTP/2
// connection from 127.0.0.2 gets 99 of MAX_SUBSCRIBERS 100, its 100th
// stream is refused with 503 (counted as ip_share, logged with the advice
// to declare a proxy), and another address still opens a listener in the
// slot kept for it.
func TestOneAddressCannotTakeTheLastListenerSlots(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "MAX_SUBSCRIBERS=100")
	rec, base := p.listening(t)
	admin := "http://127.0.0.1:" + portOf(t, rec["admin_addr"])
	h2 := h2cFrom(t, "127.0.0.2")
	for range 99 {
		ssetest.Subscribe(t, h2, base+"/events", nil)
	}
	resp, err := h2.Get(base + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.ProtoMajor != 2 {
		t.Fatalf("stream 100 from one address: %s %d, want HTTP/2 503", resp.Proto, resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other := ssetest.Subscribe(t, clientFrom("127.0.0.3"), base+"/events", nil)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/events", strings.NewReader(`{"n":1}`))
	if resp, err = clientFrom("127.0.0.3").Do(req); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST: %v, %v", resp, err)
	}
	resp.Body.Close()
	if got := other.NextData(t, ctx); got != `{"n":1}` {
		t.Fatalf("the other address's listener got %s", got)
	}
	m := ssetest.Scrape(t, admin+"/metrics")
	if got := m.Samples[`event_dispatcher_listeners_refused_total{reason="ip_share"}`]; got != 1 {
		t.Errorf("listeners_refused_total{reason=ip_share} = %v, want 1", got)
	}
	recs := p.stdout.records("stream refused: this address holds its share of the listener slots (MAX_SUBSCRIBERS less a reserve kept for other addresses); " +
		"if it is a proxy or load balancer, list it in TRUSTED_PROXY_CIDRS so that each client behind it has its own share, or set MAX_LISTENERS_PER_IP")
	if len(recs) != 1 || recs[0]["client_ip"] != "127.0.0.2" || recs[0]["share"] != 99.0 {
		t.Errorf("warnings %v, want one naming 127.0.0.2 and its share 99", recs)
	}
}
