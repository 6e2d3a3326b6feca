package connlimit_test

import (
	"context"
	"testing"

	"event-dispatcher/pkg/connlimit"
)

// Multiplexed streams beyond a connection's first count against the
// per-address cap: at it, the address gives up its own idle connection,
// then further streams are refused; closing the connection gives back
// its streams' count with its own, and their later release is harmless.
func TestMultiplexedStreamsCountAgainstThePerAddressCap(t *testing.T) {
	h := start(t, connlimit.Options{MaxPerClient: 3})
	h.dial("127.0.0.2")
	c := h.next()
	idle := h.dial("127.0.0.2")
	h.next()
	ctx := h.l.ConnContext(context.Background(), c)
	var releases []func()
	for i := range 3 { // its first, one more, then one for which idle goes
		release, ok := connlimit.AdmitStream(ctx, true)
		if !ok {
			t.Fatalf("stream %d refused", i+1)
		}
		releases = append(releases, release)
	}
	if !closedByServer(t, idle) {
		t.Fatal("the address's idle connection was not given up for its third stream")
	}
	if _, ok := connlimit.AdmitStream(ctx, true); ok {
		t.Fatal("a fourth stream was admitted at MaxPerClient 3")
	}
	if release, ok := connlimit.AdmitStream(ctx, false); !ok { // one more HTTP/1.1 request: not multiplexed
		t.Fatal("a request that is not multiplexed was refused")
	} else {
		release()
	}
	releases[0]()
	release, ok := connlimit.AdmitStream(ctx, true)
	if !ok {
		t.Fatal("a stream's end did not give its count back")
	}
	releases[0] = release
	if st := h.l.Stats(); st.Open != 1 || st.StreamsRefused != 1 {
		t.Fatalf("stats %+v, want 1 open, 1 stream refused", st)
	}

	_ = c.Close()
	for _, r := range releases {
		r()
	}
	for range 3 {
		h.dial("127.0.0.2")
		h.next()
	}
	if st := h.l.Stats(); st.Open != 3 || st.Refused[connlimit.PerClient] != 0 {
		t.Fatalf("stats %+v after the connection closed: want 3 new ones open, none refused", st)
	}
}
