package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/grpcapi"
	"event-dispatcher/pkg/publish"
)

// grpcServer is the gRPC listener (GRPC_PORT); the zero value stands for
// GRPC_PORT=off.
type grpcServer struct {
	ln  net.Listener
	srv *grpcapi.Server
}

// startGRPC listens on the gRPC port and serves the event service there,
// its events through the publish path's "grpc" door.
// Its connections count against the public port's caps (conns): one
// budget of descriptors, whatever port a flood comes through. Its refused
// calls are counted with the HTTP routes' (refusals).
func startGRPC(cfg config.Config, hub *broadcast.Hub, path *publish.Path, policy access.Policy, conns *connlimit.Listener, refusals grpcapi.Refusals, log zerolog.Logger) (grpcServer, error) {
	addr := cfg.GRPCAddr()
	if addr == "" {
		return grpcServer{}, nil
	}
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return grpcServer{}, fmt.Errorf("listen on gRPC port %s: %w", cfg.GRPCPort, err)
	}
	ln := conns.Add(raw, "grpc")
	srv := grpcapi.New(grpcapi.Options{
		Door:          path.Door("grpc"),
		Hub:           hub,
		ClientIPField: cfg.ClientIPField,
		MaxEventBytes: cfg.MaxBodyBytes,
		// A request message trickled in holds its call and connection
		// as a trickled POST body would: the same bound.
		MessageTimeout: cfg.BodyReadTimeout,
		Access:         policy,
		Logger:         log,
		Conns:          conns,
		Refusals:       refusals,
	})
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			log.Error().Err(err).Msg("gRPC listener")
		}
	}()
	return grpcServer{ln: ln, srv: srv}, nil
}

func (g grpcServer) addr() string {
	if g.ln == nil {
		return ""
	}
	return g.ln.Addr().String()
}

// drain turns the gRPC health service to NOT_SERVING.
func (g grpcServer) drain() {
	if g.srv != nil {
		g.srv.Drain()
	}
}

// stop refuses new calls and waits for those in flight until ctx ends,
// then cuts them.
func (g grpcServer) stop(ctx context.Context) error {
	if g.srv == nil {
		return nil
	}
	return g.srv.Stop(ctx)
}
