package main

import (
	"net"
	"testing"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// BODY_READ_TIMEOUT bounds a gRPC call's request message as it does a POST
// body: a PushEvent whose message never completes ends with
// DeadlineExceeded, counted as an event refused for timeout.
func TestStalledGRPCMessageEndsAfterBodyReadTimeout(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "GRPC_PORT=0", "BODY_READ_TIMEOUT=1s")
	rec, _ := p.listening(t)
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", portOf(t, rec["grpc_addr"])))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := ssetest.StalledGRPCCall(t, c, eventservicepb.EventService_PushEvent_FullMethodName); got != "4" {
		t.Fatalf("grpc-status %s, want 4 (DeadlineExceeded)", got)
	}
	m := ssetest.Scrape(t, "http://127.0.0.1:"+portOf(t, rec["admin_addr"])+"/metrics")
	if got := m.Samples[`event_dispatcher_events_rejected_total{reason="timeout"}`]; got != 1 {
		t.Errorf("events_rejected_total{reason=timeout} = %v, want 1", got)
	}
}
