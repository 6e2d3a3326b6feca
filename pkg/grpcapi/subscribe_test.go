package grpcapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// subscribe opens a Subscribe stream and waits until the hub counts it,
// so that every event published afterwards reaches it.
func (svc *service) subscribe(t *testing.T, ctx context.Context, client eventservicepb.EventServiceClient, filter map[string]string) grpc.ServerStreamingClient[eventservicepb.Event] {
	t.Helper()
	before := svc.hub.Stats().Listeners
	stream, err := client.Subscribe(ctx, &eventservicepb.SubscribeRequest{Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 30*time.Second, "the subscriber is counted", func() (bool, string) {
		n := svc.hub.Stats().Listeners
		return n > before, fmt.Sprintf("%d listeners", n)
	})
	return stream
}

func TestSubscribeGetsWhatSSEListenersGetFiltered(t *testing.T) {
	svc := start(t, grpcapi.Options{})
	ctx := within(t, 30*time.Second)
	stream := svc.subscribe(t, ctx, svc.client, map[string]string{"type": "a,b", "source": "/shop"})
	sse := ssetest.Subscribe(t, http.DefaultClient, svc.http+"/events?type=a,b&source=/shop", nil)
	for _, typ := range []string{"x", "a", "b"} {
		if _, err := svc.client.PushEvent(ctx, &eventservicepb.PushEventRequest{Id: typ, Source: "/shop", Type: typ, Specversion: "1.0", Data: []byte(`{"n": 1.0}`)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []string{"a", "b"} {
		want := `{"specversion":"1.0","id":"` + typ + `","source":"/shop","type":"` + typ + `","datacontenttype":"application/json","data":{"n":1.0}}`
		ev, err := stream.Recv()
		if err != nil || ev.GetJson() != want {
			t.Fatalf("Subscribe got %q, %v; want %s", ev.GetJson(), err, want)
		}
		if got := sse.NextData(t, ctx); got != want {
			t.Fatalf("SSE got %s, want %s", got, want)
		}
	}
}

func TestSubscribeRefusals(t *testing.T) {
	const token = "listen-token-0123456789"
	svc := startWith(t, broadcast.Options{MaxListeners: 1}, grpcapi.Options{Access: access.Policy{
		Listeners: access.NewAuth([]string{token}, nil),
	}})
	ctx := within(t, 30*time.Second)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	recvErr := func(ctx context.Context, filter map[string]string) error {
		stream, err := svc.client.Subscribe(ctx, &eventservicepb.SubscribeRequest{Filter: filter})
		if err != nil {
			return err
		}
		_, err = stream.Recv()
		return err
	}
	if err := recvErr(ctx, nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("without a token: %v, want Unauthenticated", err)
	}
	if err := recvErr(authed, map[string]string{"type": "a,,b"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "empty value") {
		t.Errorf("bad filter: %v, want InvalidArgument", err)
	}
	if err := recvErr(authed, map[string]string{"": "a"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no field name: %v, want InvalidArgument", err)
	}
	svc.subscribe(t, authed, svc.client, nil) // takes the one place
	if err := recvErr(authed, nil); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "too many listeners") {
		t.Errorf("beyond MAX_SUBSCRIBERS: %v, want Unavailable", err)
	}
	if err := svc.hub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(authed, nil); status.Code(err) != codes.Unavailable {
		t.Errorf("shutting down: %v, want Unavailable", err)
	}
	svc.wantMetrics(t,
		`event_dispatcher_listeners_refused_total{reason="unauthorized"} 1`,
		`event_dispatcher_listeners_refused_total{reason="invalid"} 2`,
		`event_dispatcher_listeners_refused_total{reason="capacity"} 1`,
		`event_dispatcher_listeners_refused_total{reason="draining"} 1`,
	)
}

// A subscriber that stops reading fills its HTTP/2 window, then its queue,
// and is dropped; a subscriber that reads gets every event meanwhile, each
// published only once it got the one before, so nothing but the stalled
// subscriber could hold it back.
func TestSubscriberThatStopsReadingIsDroppedWithoutSlowingOthers(t *testing.T) {
	svc := startWith(t, broadcast.Options{BufferBytes: 64 << 10, WriteTimeout: 500 * time.Millisecond}, grpcapi.Options{})
	ctx := within(t, 60*time.Second)
	// Fixed, small flow-control windows: the stalled client takes at most
	// 64 KiB before the server's Send blocks.
	stalledConn, err := grpc.NewClient(svc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	defer stalledConn.Close()
	stalled := svc.subscribe(t, ctx, eventservicepb.NewEventServiceClient(stalledConn), nil)
	reader := svc.subscribe(t, ctx, svc.client, nil)

	pad := strings.Repeat("x", 2000)
	const events = 600 // 1.2 MB: beyond the stalled client's window and queue together
	for i := range events {
		data := fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, pad)
		if _, err := svc.client.PushEvent(ctx, push(fmt.Sprint(i), []byte(data))); err != nil {
			t.Fatalf("PushEvent %d: %v", i, err)
		}
		ev, err := reader.Recv()
		if err != nil {
			t.Fatalf("reader, event %d: %v (dropped: %+v)", i, err, svc.hub.Counters())
		}
		if !strings.Contains(ev.GetJson(), `"id":"`+fmt.Sprint(i)+`"`) {
			t.Fatalf("reader got %.80s for event %d", ev.GetJson(), i)
		}
	}
	ssetest.Eventually(t, 30*time.Second, "the stalled subscriber is dropped", func() (bool, string) {
		c := svc.hub.Counters()
		return c.DroppedSlow+c.DroppedStalled == 1, fmt.Sprintf("%+v", c)
	})
	// Reading now, the stalled client gets what was sent before the drop,
	// then the reason.
	var got int
	for {
		if _, err = stalled.Recv(); err != nil {
			break
		}
		got++
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "dropped") || got >= events {
		t.Fatalf("stalled subscriber: %d events, then %v; want fewer than %d, then Unavailable: dropped", got, err, events)
	}
}

func TestShutdownEndsSubscribeStreamsCleanly(t *testing.T) {
	svc := start(t, grpcapi.Options{})
	ctx := within(t, 30*time.Second)
	stream := svc.subscribe(t, ctx, svc.client, nil)
	if _, err := svc.client.PushEvent(ctx, push("last", nil)); err != nil {
		t.Fatal(err)
	}
	svc.rpc.Drain()
	if err := svc.hub.Close(ctx); err != nil {
		t.Fatalf("hub.Close: %v", err)
	}
	if err := svc.rpc.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v (a stream held the graceful stop)", err)
	}
	ev, err := stream.Recv()
	if err != nil || !strings.Contains(ev.GetJson(), `"id":"last"`) {
		t.Fatalf("first Recv = %v, %v; want the event accepted before shutdown", ev, err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("after shutdown: %v, want Unavailable: server shutting down", err)
	}
}
