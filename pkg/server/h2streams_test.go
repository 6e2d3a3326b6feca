package server_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/server"
)

// Over HTTP/2 each stream beyond a connection's first counts against
// MAX_CONNECTIONS_PER_IP as a connection would: with a cap of 3, one
// HTTP/2 connection carries 3 streams, the 4th is refused with 429 while
// the connection carries on, a stream ending gives its count back, and
// another address is not affected.
func TestHTTP2StreamsCountAgainstThePerAddressCap(t *testing.T) {
	srv, lim := ssetest.StartCapped(t, broadcast.Options{}, server.Options{}, connlimit.Options{MaxPerClient: 3})
	h2 := h2cFrom(t, "127.0.0.2")
	var streams []*ssetest.Stream
	for range 3 {
		streams = append(streams, ssetest.Subscribe(t, h2, srv.URL+"/events", nil))
	}
	status := func() int {
		resp, err := h2.Get(srv.URL + "/events")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("%s, want HTTP/2", resp.Proto)
		}
		return resp.StatusCode
	}
	if got := status(); got != http.StatusTooManyRequests {
		t.Fatalf("stream 4 on one connection with MAX_CONNECTIONS_PER_IP 3: status %d, want 429", got)
	}
	if st := lim.Stats(); st.Open != 1 || st.StreamsRefused != 1 {
		t.Fatalf("stats %+v, want 1 connection open, 1 stream refused", st)
	}
	m := ssetest.Scrape(t, srv.Admin+"/metrics")
	if got := m.Samples[`event_dispatcher_listeners_refused_total{reason="connections_per_ip"}`]; got != 1 {
		t.Errorf("listeners_refused_total{reason=connections_per_ip} = %v, want 1", got)
	}
	ssetest.Subscribe(t, h2cFrom(t, "127.0.0.3"), srv.URL+"/events", nil)

	streams[0].Close()
	ssetest.Eventually(t, 30*time.Second, "the ended stream's count is given back", func() (bool, string) {
		s, err := ssetest.Open(t.Context(), h2, srv.URL+"/events", nil)
		if err != nil {
			return false, err.Error()
		}
		defer s.Close()
		return s.Resp.StatusCode == http.StatusOK, fmt.Sprint(s.Resp.StatusCode)
	})
}
