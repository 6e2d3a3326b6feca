package grpcapi_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/server"
)

// service is the gRPC service and the HTTP service on one hub and one
// publish path, both on loopback.
type service struct {
	hub    *broadcast.Hub
	rpc    *grpcapi.Server
	addr   string // gRPC
	http   string // base URL
	client eventservicepb.EventServiceClient
	conn   *grpc.ClientConn
	srv    *server.Server // the HTTP service, which counts the gRPC refusals too
}

func start(t *testing.T, opts grpcapi.Options) *service {
	t.Helper()
	return startWith(t, broadcast.Options{}, opts)
}

// startWith is start with a hub made from hubOpts (a minute of MaxLag
// unless set).
func startWith(t *testing.T, hubOpts broadcast.Options, opts grpcapi.Options) *service {
	t.Helper()
	quiet := zerolog.New(io.Discard)
	hubOpts.Logger = quiet
	if hubOpts.MaxLag == 0 {
		hubOpts.MaxLag = time.Minute
	}
	hub, err := broadcast.New(hubOpts)
	if err != nil {
		t.Fatal(err)
	}
	path := publish.New(publish.Options{Hub: hub})
	srv := server.New(server.Options{Hub: hub, Logger: quiet, MaxBodyBytes: 64 << 10, BodyReadTimeout: 10 * time.Second, Publish: path})
	hs := httptest.NewServer(srv)
	opts.Door = path.Door("grpc")
	opts.Refusals = srv
	opts.Hub = hub
	opts.Logger = quiet
	rpc := grpcapi.New(opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rpc.Serve(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hs.Close)
	t.Cleanup(func() {
		_ = conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
		_ = rpc.Stop(ctx)
	})
	return &service{hub: hub, rpc: rpc, addr: ln.Addr().String(), http: hs.URL, client: eventservicepb.NewEventServiceClient(conn), conn: conn, srv: srv}
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func push(id string, data []byte) *eventservicepb.PushEventRequest {
	return &eventservicepb.PushEventRequest{Id: id, Source: "/shop", Type: "com.example.order.placed", Specversion: "1.0", Data: data}
}

func TestPushEventReachesSSEListenersAsStructuredJSON(t *testing.T) {
	svc := start(t, grpcapi.Options{})
	stream := ssetest.Subscribe(t, http.DefaultClient, svc.http+"/events", nil)
	cases := []struct {
		data []byte
		want string
	}{
		{[]byte(`{"total": 12.50, "items":[1]}`), `{"specversion":"1.0","id":"g1","source":"/shop","type":"com.example.order.placed","datacontenttype":"application/json","data":{"total":12.50,"items":[1]}}`},
		{[]byte("\x00\x01binary"), `{"specversion":"1.0","id":"g1","source":"/shop","type":"com.example.order.placed","data_base64":"AAFiaW5hcnk="}`},
		// JSON's shape but not UTF-8, so not JSON (RFC 8259 §8.1): bytes.
		{[]byte("{\"a\":\"\xff\"}"), `{"specversion":"1.0","id":"g1","source":"/shop","type":"com.example.order.placed","data_base64":"eyJhIjoi/yJ9"}`},
		{[]byte("plain text"), `{"specversion":"1.0","id":"g1","source":"/shop","type":"com.example.order.placed","data_base64":"cGxhaW4gdGV4dA=="}`},
		{nil, `{"specversion":"1.0","id":"g1","source":"/shop","type":"com.example.order.placed"}`},
	}
	for _, c := range cases {
		resp, err := svc.client.PushEvent(within(t, 10*time.Second), push("g1", c.data))
		if err != nil || resp.GetMessage() != "Event pushed successfully" {
			t.Fatalf("PushEvent(%q) = %v, %v", c.data, resp, err)
		}
		if got := stream.NextData(t, within(t, 30*time.Second)); got != c.want {
			t.Errorf("listener got\n%s\nwant\n%s", got, c.want)
		}
	}
}

func TestPushEventStatusCodes(t *testing.T) {
	const token = "pub-token-0123456789"
	svc := start(t, grpcapi.Options{MaxEventBytes: 1024, Access: access.Policy{
		Publishers: access.NewAuth([]string{token}, nil),
		Publish:    access.NewRateLimiter(1000, 0),
	}})
	authed := metadata.AppendToOutgoingContext(within(t, 10*time.Second), "authorization", "Bearer "+token)
	cases := []struct {
		name string
		ctx  context.Context
		req  *eventservicepb.PushEventRequest
		code codes.Code
		want string
	}{
		{"no token", within(t, 10*time.Second), push("1", nil), codes.Unauthenticated, "missing token"},
		{"wrong token", metadata.AppendToOutgoingContext(within(t, 10*time.Second), "authorization", "Bearer nope-nope-nope-nope"), push("1", nil), codes.Unauthenticated, "invalid token"},
		{"bare token", metadata.AppendToOutgoingContext(within(t, 10*time.Second), "authorization", token), push("1", nil), codes.Unauthenticated, "invalid token"},
		{"specversion", authed, &eventservicepb.PushEventRequest{Id: "1", Source: "/s", Type: "t", Specversion: "0.3"}, codes.InvalidArgument, `specversion: must be "1.0"`},
		{"empty id", authed, &eventservicepb.PushEventRequest{Source: "/s", Type: "t", Specversion: "1.0"}, codes.InvalidArgument, "id: must not be empty"},
		{"empty type", authed, &eventservicepb.PushEventRequest{Id: "1", Source: "/s", Specversion: "1.0"}, codes.InvalidArgument, "type: must not be empty"},
		{"JSON beyond I-JSON", authed, push("1", []byte(`{"n":1e400}`)), codes.InvalidArgument, "I-JSON"},
		{"too large once encoded", authed, push("1", bytes.Repeat([]byte{0xff}, 900)), codes.InvalidArgument, "exceeds 1024 bytes once encoded"},
		{"message over the limit", authed, push("1", bytes.Repeat([]byte{0xff}, 64<<10)), codes.ResourceExhausted, "larger than max"},
		{"accepted", authed, push("1", []byte(`{}`)), codes.OK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := svc.client.PushEvent(c.ctx, c.req)
			if st := status.Convert(err); st.Code() != c.code || !strings.Contains(st.Message(), c.want) {
				t.Fatalf("PushEvent = %v, want %v containing %q", err, c.code, c.want)
			}
		})
	}
	if got := svc.hub.Stats().EventsAccepted; got != 1 {
		t.Fatalf("hub accepted %d events, want 1", got)
	}
	// Counted with the HTTP refusals; the message over the limit is
	// refused by gRPC before the service sees it.
	svc.wantMetrics(t,
		`event_dispatcher_events_rejected_total{reason="unauthorized"} 3`,
		`event_dispatcher_events_rejected_total{reason="invalid"} 4`,
		`event_dispatcher_events_rejected_total{reason="too_large"} 1`,
	)
}

// wantMetrics fails unless the admin /metrics has every line of want.
func (svc *service) wantMetrics(t *testing.T, want ...string) {
	t.Helper()
	rec := httptest.NewRecorder()
	svc.srv.Admin().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, w := range want {
		if !strings.Contains(rec.Body.String(), "\n"+w+"\n") {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}

func TestPushEventRateLimitedPerAddress(t *testing.T) {
	svc := start(t, grpcapi.Options{Access: access.Policy{Publish: access.NewRateLimiter(0.01, 0)}}) // burst 1
	if _, err := svc.client.PushEvent(within(t, 10*time.Second), push("1", nil)); err != nil {
		t.Fatal(err)
	}
	_, err := svc.client.PushEvent(within(t, 10*time.Second), push("2", nil))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second PushEvent = %v, want ResourceExhausted", err)
	}
	svc.wantMetrics(t, `event_dispatcher_events_rejected_total{reason="rate_limited"} 1`)
}

func TestPushEventWhileShuttingDownIsUnavailable(t *testing.T) {
	svc := start(t, grpcapi.Options{})
	if err := svc.hub.Close(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.client.PushEvent(within(t, 10*time.Second), push("1", nil)); status.Code(err) != codes.Unavailable {
		t.Fatalf("PushEvent on a closed hub = %v, want Unavailable", err)
	}
	svc.wantMetrics(t, `event_dispatcher_events_rejected_total{reason="busy"} 1`)
}

func TestHealthServesUntilDrained(t *testing.T) {
	svc := start(t, grpcapi.Options{})
	health := healthpb.NewHealthClient(svc.conn)
	for _, name := range []string{"", "eventservice.EventService"} {
		resp, err := health.Check(within(t, 10*time.Second), &healthpb.HealthCheckRequest{Service: name})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check(%q) = %v, %v; want SERVING", name, resp, err)
		}
	}
	svc.rpc.Drain()
	resp, err := health.Check(within(t, 10*time.Second), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check after Drain = %v, %v; want NOT_SERVING", resp, err)
	}
}

// grpcurl returns the path of the grpcurl binary (.ci/run installs it with
// go install), failing under CI=true when it is missing.
func grpcurl(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(goEnv(t, "GOPATH"), "bin")} {
		if p := filepath.Join(dir, "grpcurl"); dir != "" && isExec(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("grpcurl is not installed; .ci/run installs it (go install github.com/fullstorydev/grpcurl/cmd/grpcurl)")
	}
	t.Skip("grpcurl is not installed (outside CI only): go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4")
	return ""
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

func TestGrpcurlThroughReflection(t *testing.T) {
	bin := grpcurl(t)
	svc := start(t, grpcapi.Options{})
	stream := ssetest.Subscribe(t, http.DefaultClient, svc.http+"/events", nil)
	run := func(args ...string) string {
		cmd := exec.CommandContext(within(t, 30*time.Second), bin, append([]string{"-plaintext"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	list := run(svc.addr, "list")
	for _, want := range []string{"eventservice.EventService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !strings.Contains(list, want) {
			t.Errorf("grpcurl list: %q lacks %s", list, want)
		}
	}
	// The README's example, as written there.
	out := run("-d", `{"id":"42","source":"/shop","type":"com.example.order.placed","specversion":"1.0","data":"eyJ0b3RhbCI6MTIuNX0="}`,
		svc.addr, "eventservice.EventService/PushEvent")
	if !strings.Contains(out, `"message": "Event pushed successfully"`) {
		t.Fatalf("grpcurl PushEvent: %s", out)
	}
	want := `{"specversion":"1.0","id":"42","source":"/shop","type":"com.example.order.placed","datacontenttype":"application/json","data":{"total":12.5}}`
	if got := stream.NextData(t, within(t, 30*time.Second)); got != want {
		t.Fatalf("listener got %s, want %s", got, want)
	}
	health := run(svc.addr, "grpc.health.v1.Health/Check")
	if !strings.Contains(health, "SERVING") {
		t.Fatalf("grpcurl health: %s", health)
	}
}

// TestGeneratedCodeIsCurrent regenerates eventservicepb from the .proto
// with protoc and the plugins at the versions go.mod pins, and compares.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	protoc, err := exec.LookPath("protoc")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("protoc is not installed; .ci/run installs it (Debian: protobuf-compiler)")
		}
		t.Skip("protoc is not installed (outside CI only): apt-get install protobuf-compiler")
	}
	dir := t.TempDir()
	for _, plugin := range []string{"google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/grpc/cmd/protoc-gen-go-grpc"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(plugin)), plugin).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", plugin, err, out)
		}
	}
	cmd := exec.Command(protoc,
		"--plugin=protoc-gen-go="+filepath.Join(dir, "protoc-gen-go"),
		"--plugin=protoc-gen-go-grpc="+filepath.Join(dir, "protoc-gen-go-grpc"),
		"-I", "../../proto", "--go_out="+dir, "--go_opt=paths=source_relative",
		"--go-grpc_out="+dir, "--go-grpc_opt=paths=source_relative", "eventservice/eventservice.proto")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, out)
	}
	// The protoc version line differs between installations and says
	// nothing about the code.
	version := regexp.MustCompile(`(?m)^// \s*protoc\s+v.*$`)
	for _, name := range []string{"eventservice.pb.go", "eventservice_grpc.pb.go"} {
		fresh, err := os.ReadFile(filepath.Join(dir, "eventservice", name))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(filepath.Join("eventservicepb", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(version.ReplaceAll(fresh, nil), version.ReplaceAll(committed, nil)) {
			t.Errorf("eventservicepb/%s is stale: run go generate ./pkg/grpcapi", name)
		}
	}
}
