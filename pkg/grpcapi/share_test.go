package grpcapi_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// Without MAX_LISTENERS_PER_IP, a subscriber's address may hold all the
// listener slots but 1 %: of 100, its 100th Subscribe is refused with
// Unavailable and counted as ip_share, while a slot is left for others.
func TestSubscribeBeyondTheAddressShare(t *testing.T) {
	svc := startWith(t, broadcast.Options{MaxListeners: 100}, grpcapi.Options{Access: access.Policy{Streams: access.NewStreamShare(100)}})
	ctx := within(t, 60*time.Second)
	for range 99 {
		svc.subscribe(t, ctx, svc.client, nil)
	}
	stream, err := svc.client.Subscribe(ctx, &eventservicepb.SubscribeRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "share") {
		t.Fatalf("Subscribe 100 from one address: %v, want Unavailable for its share", err)
	}
	if n := svc.hub.Stats().Listeners; n != 99 {
		t.Fatalf("%d listeners, want 99", n)
	}
	svc.wantMetrics(t, `event_dispatcher_listeners_refused_total{reason="ip_share"} 1`)
}
