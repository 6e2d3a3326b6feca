package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"event-dispatcher/internal/brokertest"
	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// Two replicas on Redis: a CloudEvent POSTed to replica A and one pushed
// over gRPC to A reach an SSE listener and a gRPC subscriber of replica B
// exactly once each, byte for byte as A's own listeners get them.
func TestCloudEventsReachOtherReplicasOnce(t *testing.T) {
	reps := startReplicas(t, 2, "BROKER_URL="+brokertest.Redis(t).URL, "GRPC_PORT=0")
	waitBroker(t, reps, "connected", resumeWithin)
	var subs []eventservicepb.EventService_SubscribeClient
	var pushA eventservicepb.EventServiceClient
	for i, r := range reps {
		_, port, err := net.SplitHostPort(fmt.Sprint(r.logs.records("event dispatcher listening")[0]["grpc_addr"]))
		if err != nil {
			t.Fatalf("replica %d grpc_addr: %v", i, err)
		}
		conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := eventservicepb.NewEventServiceClient(conn)
		if i == 0 {
			pushA = c
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		sub, err := c.Subscribe(ctx, &eventservicepb.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	sseB := collect(t, http.DefaultClient, reps[1].base)
	sseA := collect(t, http.DefaultClient, reps[0].base)
	ssetest.Eventually(t, 30*time.Second, "both gRPC subscribers counted", func() (bool, string) {
		for _, r := range reps {
			if h := get(t, r.base+"/health"); !strings.Contains(h, `"listeners":2`) {
				return false, h
			}
		}
		return true, ""
	})

	resp, err := http.Post(reps[0].base+"/events", "application/cloudevents+json",
		strings.NewReader(`{"specversion":"1.0","id":"http-1","source":"/shop","type":"t","data":{"n":1.50}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /events to A: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := pushA.PushEvent(ctx, &eventservicepb.PushEventRequest{Id: "grpc-1", Source: "/shop", Type: "t", Specversion: "1.0", Data: []byte(`{"n":2}`)}); err != nil {
		t.Fatalf("PushEvent to A: %v", err)
	}
	// A marker through A last: on B, a duplicate of either event would
	// come through the broker before it, so "exactly these 3" is exact.
	resp, err = http.Post(reps[0].base+"/events", "application/cloudevents+json",
		strings.NewReader(`{"specversion":"1.0","id":"marker","source":"/shop","type":"t"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := []string{
		`{"specversion":"1.0","id":"http-1","source":"/shop","type":"t","data":{"n":1.50},"user_ip":"127.0.0.1"}`,
		`{"specversion":"1.0","id":"grpc-1","source":"/shop","type":"t","datacontenttype":"application/json","data":{"n":2},"user_ip":"127.0.0.1"}`,
		`{"specversion":"1.0","id":"marker","source":"/shop","type":"t","user_ip":"127.0.0.1"}`,
	}
	for name, c := range map[string]*collector{"SSE listener of B": sseB, "SSE listener of A": sseA} {
		ssetest.Eventually(t, resumeWithin, name+" gets 3 events", func() (bool, string) {
			return len(c.lines()) >= len(want), strings.Join(c.lines(), "\n")
		})
		if got := strings.Join(c.lines(), "\n"); got != strings.Join(want, "\n") {
			t.Errorf("%s got\n%s\nwant\n%s", name, got, strings.Join(want, "\n"))
		}
	}
	for i, sub := range subs {
		for j, w := range want {
			ev, err := sub.Recv()
			if err != nil || ev.GetJson() != w {
				t.Fatalf("gRPC subscriber of replica %d, event %d: %v %v, want %s", i, j, ev, err, w)
			}
		}
	}
}
