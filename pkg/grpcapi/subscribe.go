package grpcapi

import (
	"context"
	"errors"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/grpcapi/eventservicepb"
)

// Subscribe streams every event its filter keeps, each as the JSON line an
// SSE listener gets, with an SSE listener's rules: the listener token
// (LISTEN_TOKENS, LISTEN_JWT_SECRET) from the authorization metadata,
// MAX_LISTENERS_PER_IP, MAX_SUBSCRIBERS, the same queue, and dropped when
// it cannot keep up (pkg/broadcast's Hub.Listen). Heartbeats are HTTP/2
// pings. The stream ends with Unavailable and the reason (shutdown,
// dropped as slow, maximum duration, too many listeners): reconnect.
func (s *Server) Subscribe(req *eventservicepb.SubscribeRequest, stream grpc.ServerStreamingServer[eventservicepb.Event]) error {
	ctx := stream.Context()
	if s.opts.Hub == nil {
		return status.Error(codes.Unimplemented, "subscriptions are not served here")
	}
	if err := checkToken(ctx, s.opts.Access.Listeners); err != nil {
		s.opts.Refusals.StreamRefused("unauthorized")
		return err
	}
	filter, err := parseFilter(req.GetFilter())
	if err != nil {
		s.opts.Refusals.StreamRefused("invalid")
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if limit := s.opts.Access.Streams; limit != nil {
		ip := peerAddr(ctx)
		if !limit.Acquire(ip) {
			if limit.Shared() {
				s.opts.Refusals.StreamRefused("ip_share")
				limit.WarnShare(s.opts.Logger, ip)
				return status.Error(codes.Unavailable, "this address holds its share of the listener slots; the rest are kept for others")
			}
			s.opts.Refusals.StreamRefused("rate_limited")
			return status.Error(codes.ResourceExhausted, "too many streams open from this address")
		}
		defer limit.Release(ip)
	}
	_, err = s.opts.Hub.Listen(ctx, filter, streamWriter{stream})
	switch {
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err() // the client went away
	case errors.Is(err, broadcast.ErrTooMany):
		s.opts.Refusals.StreamRefused("capacity")
		return status.Error(codes.Unavailable, "too many listeners; retry shortly")
	case errors.Is(err, broadcast.ErrClosed): // refused before it started
		s.opts.Refusals.StreamRefused("draining")
		return status.Error(codes.Unavailable, err.Error()+"; reconnect")
	case err == nil:
		return status.Error(codes.Unavailable, "stream ended; reconnect")
	default:
		return status.Error(codes.Unavailable, err.Error()+"; reconnect")
	}
}

// streamWriter sends each event as one message. Send blocks while the
// client's flow-control window is full: Hub.Listen drops the listener when
// a call outlasts WRITE_TIMEOUT, and returning from Subscribe ends the
// stream, which makes the blocked Send return.
type streamWriter struct {
	stream grpc.ServerStreamingServer[eventservicepb.Event]
}

func (w streamWriter) WriteEvents(_ context.Context, events [][]byte) error {
	for _, ev := range events {
		if err := w.stream.Send(&eventservicepb.Event{Json: string(ev)}); err != nil {
			return err
		}
	}
	return nil
}

// checkToken requires a token auth accepts in the authorization metadata
// ("Bearer <token>"), as the HTTP routes do; a nil auth lets anyone in.
func checkToken(ctx context.Context, auth *access.Auth) error {
	if !auth.Required() {
		return nil
	}
	token, bearer := access.BearerToken(authorization(ctx))
	err := auth.Check(token)
	if !bearer {
		err = access.ErrInvalid
	}
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	return nil
}

// authorization is the first authorization metadata value of the call.
func authorization(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// parseFilter turns a SubscribeRequest's filter (field → comma-separated
// values) into the hub's filter, under the SSE query's rules and bounds.
// Fields are taken in name order, so an error is the same every time.
func parseFilter(m map[string]string) (*broadcast.Filter, error) {
	var spec broadcast.FilterSpec
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := spec.Add(name, strings.Split(m[name], ",")...); err != nil {
			return nil, err
		}
	}
	return spec.Filter(), nil
}
