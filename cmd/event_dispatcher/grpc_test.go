package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// The built binary with GRPC_PORT and PUBLISH_TOKENS: a PushEvent with the
// token reaches an SSE listener, one without is Unauthenticated, the
// players' POST stays open, and SIGTERM ends it all cleanly.
func TestGRPCPushEventWithPublisherTokens(t *testing.T) {
	const token = "pub-token-0123456789"
	p := startProcess(t, nil, "PORT=0", "ADMIN_PORT=off", "GRPC_PORT=0", "PUBLISH_TOKENS="+token, "SHUTDOWN_TIMEOUT=15s")
	rec, base := p.listening(t)
	_, port, err := net.SplitHostPort(rec["grpc_addr"].(string))
	if err != nil {
		t.Fatalf("grpc_addr %v: %v", rec["grpc_addr"], err)
	}
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := eventservicepb.NewEventServiceClient(conn)
	stream := ssetest.Subscribe(t, http.DefaultClient, base+"/events?source=/shop", nil)
	sub, err := client.Subscribe(context.Background(), &eventservicepb.SubscribeRequest{Filter: map[string]string{"source": "/shop"}})
	if err != nil {
		t.Fatal(err)
	}

	req := &eventservicepb.PushEventRequest{Id: "1", Source: "/shop", Type: "t", Specversion: "1.0", Data: []byte(`{"a":1}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := client.PushEvent(ctx, req); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("PushEvent without a token = %v, want Unauthenticated", err)
	}
	resp, err := client.PushEvent(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), req)
	if err != nil || resp.GetMessage() != "Event pushed successfully" {
		t.Fatalf("PushEvent = %v, %v", resp, err)
	}
	want := `{"specversion":"1.0","id":"1","source":"/shop","type":"t","datacontenttype":"application/json","data":{"a":1}}`
	if got := stream.NextData(t, ctx); got != want {
		t.Fatalf("listener got %s, want %s", got, want)
	}
	if ev, err := sub.Recv(); err != nil || ev.GetJson() != want {
		t.Fatalf("gRPC subscriber got %v, %v; want %s", ev, err, want)
	}
	r, err := http.Post(base+"/events", "application/cloudevents+json", strings.NewReader(`{"specversion":"1.0","id":"2","source":"/shop","type":"t"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST /events without a token: %d, want 401", r.StatusCode)
	}
	r, err = http.Post(base+"/api/events", "application/json", strings.NewReader(`{"source":"/shop","player":1}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusNoContent {
		t.Fatalf("POST /api/events without a token: %d, want 204", r.StatusCode)
	}
	if got := stream.NextData(t, ctx); got != `{"source":"/shop","player":1}` {
		t.Fatalf("listener got %s", got)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 30*time.Second, "the gRPC server or its subscriber")
	if ev, err := sub.Recv(); err != nil || ev.GetJson() != `{"source":"/shop","player":1}` {
		t.Fatalf("gRPC subscriber got %v, %v; want the player's event", ev, err)
	}
	if _, err := sub.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Fatalf("gRPC subscriber at shutdown: %v, want Unavailable: server shutting down", err)
	}
}
