package grpcapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
	"event-dispatcher/pkg/publish"
)

// A Subscribe call marks its connection as a stream: at the total cap with
// nothing idle, an address holding two subscriptions on two connections,
// more than its share, keeps both, and the newcomer is refused.
func TestSubscribeConnectionsAreNeverClosedForRoom(t *testing.T) {
	hub, err := broadcast.New(broadcast.Options{Logger: zerolog.Nop(), MaxLag: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	path := publish.New(publish.Options{Hub: hub})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := connlimit.New(raw, connlimit.Options{Max: 2})
	rpc := grpcapi.New(grpcapi.Options{Door: path.Door("grpc"), Hub: hub, Logger: zerolog.Nop(), Conns: lim})
	go func() { _ = rpc.Serve(lim) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
		_ = rpc.Stop(ctx)
	})
	ctx := within(t, 30*time.Second)
	var streams []grpc.ServerStreamingClient[eventservicepb.Event]
	for range 2 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		conn, err := grpc.NewClient(raw.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		s, err := eventservicepb.NewEventServiceClient(conn).Subscribe(ctx, &eventservicepb.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	ssetest.Eventually(t, 30*time.Second, "both subscriptions are counted", func() (bool, string) {
		n := hub.Stats().Listeners
		return n == 2, fmt.Sprintf("%d listeners", n)
	})

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}}
	newcomer, err := d.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer newcomer.Close()
	_ = newcomer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := newcomer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("the newcomer was not refused: %v", err)
	}
	if _, err := path.Door("test").Publish(nil, []byte(`{"a":1}`), ""); err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		if ev, err := s.Recv(); err != nil || ev.GetJson() != `{"a":1}` {
			t.Fatalf("subscription %d after the newcomer: %v, %v", i, ev, err)
		}
	}
	if st := lim.Stats(); st.ClosedBusy != 0 || st.Refused[connlimit.Total] != 1 {
		t.Fatalf("stats %+v, want nothing closed, 1 refused", st)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}
