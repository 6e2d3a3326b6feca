// Package grpcapi is the gRPC face of the dispatcher (GRPC_PORT): the
// service eventservice.EventService of proto/eventservice, whose PushEvent
// publishes a CloudEvent through the publish path's "grpc" door, plus the
// standard health service and server reflection, so grpcurl and load
// balancers work without the .proto.
//
// The generated code in eventservicepb is committed; a test regenerates it
// and fails when it is stale. To regenerate, with protoc installed
// (Debian: protobuf-compiler) and the plugins at the versions go.mod pins
// as tools:
//
//	go generate ./pkg/grpcapi
package grpcapi

//go:generate sh -c "d=$(mktemp -d) && go build -o $d/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go && go build -o $d/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc && protoc --plugin=protoc-gen-go=$d/protoc-gen-go --plugin=protoc-gen-go-grpc=$d/protoc-gen-go-grpc -I ../../proto --go_out=$d --go_opt=paths=source_relative --go-grpc_out=$d --go-grpc_opt=paths=source_relative eventservice/eventservice.proto && cp $d/eventservice/*.go eventservicepb/ && rm -r $d"

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/cloudevents"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
	"event-dispatcher/pkg/publish"
)

// Pushed is PushEvent's answer, word for word what the service being
// replaced answered.
const Pushed = "Event pushed successfully"

// Options are the Server's dependencies and settings.
type Options struct {
	Door          *publish.Door  // where pushed events go: the publish path's "grpc" door
	Hub           *broadcast.Hub // where Subscribe listens; nil: Unimplemented
	ClientIPField string         // CLIENT_IP_FIELD: the CloudEvents check leaves it alone
	// MaxEventBytes bounds a request message and the event it becomes
	// (MAX_BODY_BYTES). Zero means 64 KiB.
	MaxEventBytes int64
	// MessageTimeout bounds the time from a call's HEADERS to its first
	// request message fully received (BODY_READ_TIMEOUT): a call still
	// waiting then ends with DeadlineExceeded, and a PushEvent cut so is
	// counted as refused for "timeout". Zero means 10 s.
	MessageTimeout time.Duration
	Access         access.Policy // Publishers, Publish (per-IP rate), AnonymizeIP for PushEvent; Listeners, Streams for Subscribe
	Logger         zerolog.Logger
	// Conns, when set, is told which connections [Server.Serve] accepted
	// are serving a call and which are idle (the connection caps).
	Conns ConnTracker
	// Refusals, when set, counts the calls refused, with the HTTP routes'
	// refusals (events_rejected_total, listeners_refused_total), so an
	// operator alerting on those sees the gRPC clients too.
	Refusals Refusals
}

// Refusals counts refused calls by reason, with the labels of the HTTP
// routes' counters.
type Refusals interface {
	// EventRefused: a PushEvent refused; reason is one of rate_limited,
	// unauthorized, invalid, too_large, busy, timeout.
	EventRefused(reason string)
	// StreamRefused: a Subscribe refused before it started; reason is one
	// of capacity, draining, rate_limited, unauthorized, invalid.
	StreamRefused(reason string)
}

// noRefusals is Options.Refusals when not set.
type noRefusals struct{}

func (noRefusals) EventRefused(string)  {}
func (noRefusals) StreamRefused(string) {}

// Server is the gRPC service. Create it with [New], serve it with
// [Server.Serve], stop it with [Server.Stop].
type Server struct {
	eventservicepb.UnimplementedEventServiceServer
	opts   Options
	grpc   *grpc.Server
	conns  *connStates // nil without Options.Conns
	health *health.Server
	check  func([]byte) error
}

// messageOverhead is what a PushEventRequest adds to its data: the id,
// source, type and specversion with their tags, within reason. The
// message limit is MaxEventBytes plus this, so an event whose data is
// MaxEventBytes of JSON is refused for its size with a message that says
// so, not by the transport.
const messageOverhead = 4 << 10

// New returns the service with health and reflection registered.
func New(opts Options) *Server {
	if opts.MaxEventBytes <= 0 {
		opts.MaxEventBytes = 64 << 10
	}
	if opts.Refusals == nil {
		opts.Refusals = noRefusals{}
	}
	if opts.MessageTimeout <= 0 {
		opts.MessageTimeout = 10 * time.Second
	}
	s := &Server{opts: opts, health: health.NewServer()}
	s.check = func(obj []byte) error { return cloudevents.Check(obj, opts.ClientIPField) }
	deadline := &messageDeadline{d: opts.MessageTimeout, expired: func(method string) {
		if method == eventservicepb.EventService_PushEvent_FullMethodName {
			opts.Refusals.EventRefused("timeout")
		}
	}}
	extra := []grpc.ServerOption{grpc.InTapHandle(deadline.tap), grpc.StatsHandler(deadline)}
	if opts.Conns != nil {
		s.conns = &connStates{tr: opts.Conns, conns: map[connKey]net.Conn{}}
		extra = append(extra, grpc.StatsHandler(s.conns))
	}
	s.grpc = grpc.NewServer(append(extra,
		grpc.MaxRecvMsgSize(int(opts.MaxEventBytes)+messageOverhead),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
		// Dead peers are found by HTTP/2 pings, not by heartbeats in the
		// stream; clients may ping as often as every 10 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.ConnectionTimeout(5*time.Second),
	)...)
	eventservicepb.RegisterEventServiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.health.SetServingStatus(eventservicepb.EventService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s
}

// maxStreamsPerConn bounds the calls one connection has open at once.
const maxStreamsPerConn = 256

// GRPC returns the underlying server, to serve on a listener.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// Serve accepts connections on ln and serves them until Stop; with
// Options.Conns, it tells it which of them are serving a call.
func (s *Server) Serve(ln net.Listener) error {
	if s.conns != nil {
		ln = s.conns.listen(ln)
	}
	return s.grpc.Serve(ln)
}

// Drain makes the health service answer NOT_SERVING, so load balancers
// stop sending new calls, while calls still go through.
func (s *Server) Drain() { s.health.Shutdown() }

// Stop ends the service: no new calls, the ones in flight get until ctx
// ends (GracefulStop), then every connection is closed (Stop). Streams
// (Subscribe) end when the hub closes; call Stop after that, or they hold
// it until ctx ends.
func (s *Server) Stop(ctx context.Context) error {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return errors.New("grpc: calls still running at the deadline were cut")
	}
}

// PushEvent publishes one CloudEvent.
func (s *Server) PushEvent(ctx context.Context, req *eventservicepb.PushEventRequest) (*eventservicepb.PushEventResponse, error) {
	ip := peerAddr(ctx)
	if err := s.admit(ctx, ip); err != nil {
		return nil, err
	}
	ev, err := cloudevents.Push(nil, req.GetSpecversion(), req.GetId(), req.GetSource(), req.GetType(), req.GetData())
	if err != nil {
		s.opts.Refusals.EventRefused("invalid")
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if int64(len(ev)) > s.opts.MaxEventBytes {
		s.opts.Refusals.EventRefused("too_large")
		return nil, status.Error(codes.InvalidArgument, "event exceeds "+strconv.FormatInt(s.opts.MaxEventBytes, 10)+" bytes once encoded (base64 adds a third to data that is not JSON)")
	}
	data, err := s.opts.Door.Prepare(ev[len(ev):], ev, s.eventIP(ip), s.check)
	if err == nil {
		err = s.opts.Door.Send(data)
	}
	switch {
	case err == nil:
		return &eventservicepb.PushEventResponse{Message: Pushed}, nil
	case errors.Is(err, publish.ErrInvalid):
		s.opts.Refusals.EventRefused("invalid")
		return nil, status.Error(codes.InvalidArgument, err.Error())
	default: // saturated or shutting down: retry shortly, or elsewhere
		s.opts.Refusals.EventRefused("busy")
		return nil, status.Error(codes.Unavailable, err.Error())
	}
}

// admit applies the per-IP publish rate, then the publisher tokens: the
// rate first, so that guessing tokens is rate limited too.
func (s *Server) admit(ctx context.Context, ip netip.Addr) error {
	if limit := s.opts.Access.Publish; limit != nil {
		if ok, wait := limit.Allow(ip, time.Now()); !ok {
			s.opts.Refusals.EventRefused("rate_limited")
			secs := int(max(1, math.Ceil(wait.Seconds())))
			return status.Error(codes.ResourceExhausted, "too many events from this address; retry in "+strconv.Itoa(secs)+" s")
		}
	}
	err := checkToken(ctx, s.opts.Access.Publishers)
	if err != nil {
		s.opts.Refusals.EventRefused("unauthorized")
	}
	return err
}

// eventIP is the address CLIENT_IP_FIELD writes: the TCP peer (a gRPC
// client connects directly or through a layer-4 balancer), truncated with
// CLIENT_IP_ANONYMIZE.
func (s *Server) eventIP(ip netip.Addr) string {
	if !s.opts.Door.WantsClientIP() || !ip.IsValid() {
		return ""
	}
	if s.opts.Access.AnonymizeIP {
		return access.Anonymize(ip).String()
	}
	return ip.String()
}

// peerAddr is the TCP peer's address, unmapped; invalid when unknown.
func peerAddr(ctx context.Context) netip.Addr {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(p.Addr.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
