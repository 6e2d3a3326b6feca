package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/fixtures"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/server"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDoors is the CPU per accepted event of each way in, with the
// same event (the player's START fixture as data), one client at a time
// over loopback, client and server in this process: POST /api/events
// (the bare object), POST /events structured, binary, batched (100 events
// a request) and gRPC PushEvent. cpu-ns/event is the process's user+system
// CPU over the run divided by the events accepted (both ends included);
// the hub has no listener, so it is the cost of getting an event in.
//
//	go test -run '^$' -bench BenchmarkDoors -benchtime 2s -count 3 ./pkg/grpcapi
func BenchmarkDoors(b *testing.B) {
	data, err := fixtures.Get("start.json")
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, data); err != nil {
		b.Fatal(err)
	}
	data = buf.Bytes()
	structured := []byte(`{"specversion":"1.0","id":"1","source":"/player","type":"start","datacontenttype":"application/json","data":` + string(data) + `}`)
	var batch bytes.Buffer
	const perBatch = 100
	batch.WriteByte('[')
	for i := range perBatch {
		if i > 0 {
			batch.WriteByte(',')
		}
		batch.Write(structured)
	}
	batch.WriteByte(']')

	quiet := zerolog.Nop()
	hub, err := broadcast.New(broadcast.Options{QueueSize: 1 << 16, MaxLag: time.Minute, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
	}()
	path := publish.New(publish.Options{Hub: hub})
	hs := httptest.NewServer(server.New(server.Options{Hub: hub, Logger: quiet, MaxBodyBytes: 1 << 20, BodyReadTimeout: 10 * time.Second, Publish: path}))
	defer hs.Close()
	rpc := grpcapi.New(grpcapi.Options{Door: path.Door("grpc"), Hub: hub, Logger: quiet})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = rpc.GRPC().Serve(ln) }()
	defer rpc.GRPC().Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := eventservicepb.NewEventServiceClient(conn)
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

	post := func(path string, header http.Header, body []byte, want int) func() {
		return func() {
			req, _ := http.NewRequest(http.MethodPost, hs.URL+path, bytes.NewReader(body))
			req.Header = header
			resp, err := httpc.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				b.Fatalf("POST %s: %d", path, resp.StatusCode)
			}
		}
	}
	ce := func(ct string) http.Header { return http.Header{"Content-Type": {ct}} }
	binary := http.Header{"Content-Type": {"application/json"}, "Ce-Specversion": {"1.0"}, "Ce-Id": {"1"}, "Ce-Source": {"/player"}, "Ce-Type": {"start"}}
	pushReq := &eventservicepb.PushEventRequest{Id: "1", Source: "/player", Type: "start", Specversion: "1.0", Data: data}
	cases := []struct {
		name   string
		events int // per call
		call   func()
	}{
		{"post", 1, post("/api/events", ce("application/json"), data, http.StatusNoContent)},
		{"structured", 1, post("/events", ce("application/cloudevents+json"), structured, http.StatusOK)},
		{"binary", 1, post("/events", binary, data, http.StatusOK)},
		{"batch" + strconv.Itoa(perBatch), perBatch, post("/events", ce("application/cloudevents-batch+json"), batch.Bytes(), http.StatusOK)},
		{"grpc", 1, func() {
			if _, err := client.PushEvent(context.Background(), pushReq); err != nil {
				b.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			c.call() // warm the connection
			before := hub.Stats().EventsAccepted
			cpu := cpuTime(b)
			b.ResetTimer()
			for range b.N {
				c.call()
			}
			b.StopTimer()
			events := hub.Stats().EventsAccepted - before
			if events != uint64(b.N*c.events) {
				b.Fatalf("%d events accepted, want %d", events, b.N*c.events)
			}
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(events), "cpu-ns/event")
			b.ReportMetric(float64(b.Elapsed())/float64(events), "ns/event")
		})
	}
}
