package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/config"
	"event-dispatcher/pkg/connlimit"
	"event-dispatcher/pkg/publish"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/tlscert"
)

// serve wires the hub and the HTTP server, listens, and on ctx's end shuts
// down gracefully: health turns 503, and after cfg.DrainDelay no new
// connections are accepted, in-flight POSTs finish, everything accepted is
// fanned out, then every stream ends cleanly, all within
// cfg.ShutdownTimeout. The admin listener answers until the end.
func serve(ctx context.Context, cfg config.Config, unknown []config.NearMiss, logOut io.Writer, ready chan<- string) error {
	log := newLogger(cfg, logOut)
	for _, m := range unknown {
		log.Warn().Str("variable", m.Name).Str("did_you_mean", m.Like).Msg("environment variable not used by the service; a typo?")
	}
	for _, r := range cfg.Risks() {
		log.Warn().Str("variable", r.Name).Str("why", r.Why).Msg("risky setting")
	}
	caps := connCaps(cfg, log)
	listeners := caps.Listeners(cfg.MaxSubscribers)
	if listeners < cfg.MaxSubscribers {
		log.Warn().Str("variable", "MAX_SUBSCRIBERS").Int("max_listeners", listeners).
			Str("why", fmt.Sprintf("%d is above 90 %% of MAX_CONNECTIONS %d: listeners could hold every connection, leaving none for POSTs and health probes; at most %d are admitted", cfg.MaxSubscribers, caps.Max, listeners)).
			Msg("risky setting")
	}
	hub, err := broadcast.New(broadcast.Options{
		QueueSize:         cfg.PublishQueueSize,
		QueueBytes:        cfg.PublishQueueBytes,
		MaxLag:            cfg.MaxFanoutLag,
		MaxListeners:      listeners,
		BufferBytes:       cfg.SubscriberBufferBytes,
		WriteTimeout:      cfg.WriteTimeout,
		Heartbeat:         cfg.HeartbeatInterval,
		MaxStreamDuration: cfg.MaxStreamDuration,
		Logger:            log,
	})
	if err != nil {
		return err // config.Load validated every value: this is a bug
	}
	relay, closeBroker, err := startBroker(cfg, hub, log)
	if err != nil {
		closeNow(hub)
		return err
	}
	stream, err := startKinesis(cfg, log)
	if err != nil {
		closeNow(hub, closeBroker)
		return err
	}
	closeKinesis := func(context.Context) error { return nil }
	// Every way in ends in one path: validated and compacted once, then to
	// the local hub and to every sink (the other replicas, when linked;
	// the Kinesis stream, when set). Events from other replicas reach the
	// hub only: each is put to Kinesis once, by the replica that took it.
	var sinks []publish.Sink
	if relay != nil {
		sinks = append(sinks, publish.SinkFunc(relay.Publish))
	}
	var kinesisSink server.KinesisSink // stays nil, not a nil *Sink, when off
	if stream != nil {
		sinks, kinesisSink, closeKinesis = append(sinks, stream), stream, stream.Close
	}
	path := publish.New(publish.Options{Hub: hub, Sinks: sinks, Lenient: !cfg.StrictJSON, ClientIPField: cfg.ClientIPField})
	ln, err := listen(ctx, cfg.Addr(), cfg.WriteTimeout)
	if err != nil {
		closeNow(hub, closeBroker, closeKinesis)
		return fmt.Errorf("listen on port %s: %w", cfg.Port, err)
	}
	conns := connlimit.New(ln, caps)
	ln, certs, err := serveTLS(cfg, conns, log)
	if err != nil {
		closeNow(hub, closeBroker, closeKinesis)
		return err
	}
	feeds, err := newUpstreams(cfg, path, log)
	if err != nil {
		_ = ln.Close()
		closeNow(hub, closeBroker, closeKinesis)
		return err // config.Load validated every value: this is a bug
	}
	defer feeds.Close() // on every way out; a no-op after the shutdown closed it
	policy := access.Policy{
		Listeners:   access.NewAuth(cfg.ListenTokens, []byte(cfg.ListenJWTSecret)),
		Publishers:  access.NewAuth(cfg.PublishTokens, nil),
		Publish:     access.NewRateLimiter(cfg.PublishRatePerIP, access.MaxTrackedClients), // one budget per client, HTTP and gRPC
		Streams:     streamLimiter(cfg.MaxListenersPerIP, listeners),
		AnonymizeIP: cfg.ClientIPAnonymize,
	}
	srv := server.New(server.Options{
		Hub:             hub,
		Logger:          log,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		BodyReadTimeout: cfg.BodyReadTimeout,
		AllowOrigins:    cfg.AllowOrigins,
		ClientIPField:   cfg.ClientIPField,
		ClientIP:        clientip.New(cfg.TrustedNets),
		Access:          policy,
		WriteTimeout:    cfg.WriteTimeout,
		LenientJSON:     !cfg.StrictJSON,
		Broker:          relay,
		Publish:         path,
		Conns:           conns,
		Certificate:     certs,
		Upstreams:       feeds.Stats,
		Kinesis:         kinesisSink,
	})
	hs := srv.HTTPServer()
	hs.ConnState = server.TrackConns(conns)
	hs.ConnContext = conns.ConnContext // lets the stream handler mark its connection
	admin, err := startAdmin(cfg, srv, log)
	if err != nil {
		_ = ln.Close()
		closeNow(hub, closeBroker, closeKinesis)
		return err
	}
	defer admin.close()
	rpc, err := startGRPC(cfg, hub, path, policy, conns, srv, log)
	if err != nil {
		_ = ln.Close()
		closeNow(hub, closeBroker, closeKinesis)
		return err
	}
	defer func() { // cut at once if serve returns early; nothing left after the graceful stop
		now, cut := context.WithCancel(context.Background())
		cut()
		_ = rpc.stop(now)
	}()
	bg, stopBg := context.WithCancel(context.Background())
	defer stopBg()
	go srv.LogCounters(bg, time.Minute)
	go reclaimMemory(bg, hub, log)
	withOrigin(log.Info().Str("version", version).Str("addr", ln.Addr().String()).Str("admin_addr", admin.addr()).Str("grpc_addr", rpc.addr()), relay).
		Object("config", cfg).Msg("event dispatcher listening")
	if ready != nil {
		ready <- ln.Addr().String()
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	feeds.Start()
	select {
	case err := <-served:
		feeds.Close()
		closeNow(hub, closeBroker, closeKinesis)
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info().Int64("timeout_ms", cfg.ShutdownTimeout.Milliseconds()).Msg("shutting down")
	start := time.Now()
	// Upstream feeds first: nothing new comes in from them while what they
	// already handed over drains with the rest.
	feeds.Close()
	srv.Drain()
	rpc.drain()
	if cfg.DrainDelay > 0 {
		// Load balancers see the 503 before connections are refused.
		log.Info().Float64("drain_delay_s", cfg.DrainDelay.Seconds()).Msg("draining")
		time.Sleep(cfg.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hs.Shutdown(sctx) }() // closes the listener at once, then waits for handlers
	rpcStopped := make(chan error, 1)
	go func() { rpcStopped <- rpc.stop(sctx) }() // no new calls; in flight ones finish, streams end with the hub
	// POSTs in flight get ingestGrace to finish: one whose body is still
	// trickling in after that must not hold every stream's clean end, and
	// the shutdown, for up to BODY_READ_TIMEOUT. It is cut with the other
	// connections below; its event, if it comes, is refused by the closed
	// hub.
	ictx, icancel := context.WithTimeout(sctx, ingestGrace)
	if srv.WaitIngest(ictx) != nil && sctx.Err() == nil {
		log.Warn().Msg("a POST still receiving its body after the grace period will be cut")
	}
	icancel()
	// What the finished POSTs queued for other replicas is sent before the
	// local fan-out drains. Kinesis gets what is buffered meanwhile, within
	// the same deadline; what it could not send is logged by the sink, not
	// a failed shutdown.
	kinesisClosed := make(chan struct{})
	go func() { _ = closeKinesis(sctx); close(kinesisClosed) }()
	err = errors.Join(closeBroker(sctx), hub.Close(sctx))
	<-kinesisClosed
	if err == nil {
		// Every stream is done, and every POST but a trickling one. What
		// Shutdown may still wait for is that POST, a connection that never
		// sent a request (net/http gives those 5 s) or a late request on a
		// kept-alive one, refused at once with 503: close whatever is left
		// after a short grace.
		select {
		case err = <-shut:
		case <-time.After(250 * time.Millisecond):
			_ = hs.Close()
			<-shut
		}
	}
	if rerr := <-rpcStopped; rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		log.Warn().Err(err).Msg("graceful shutdown incomplete; closing remaining connections")
		_ = hs.Close()
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		log.Warn().Err(serr).Msg("serve")
	}
	// Whole microseconds over 1e6: 0.001234, not a float64 sum's
	// 0.0012340000000000001. A quiet shutdown takes under 1 ms.
	log.Info().Float64("took_s", float64(time.Since(start).Microseconds())/1e6).Msg("stopped")
	return nil
}

// connCaps are the caps on the public port's connections (see package
// connlimit), by default from the descriptor limit.
func connCaps(cfg config.Config, log zerolog.Logger) connlimit.Options {
	nofile, err := connlimit.DescriptorLimit()
	if err != nil {
		nofile = 1024 // the usual soft limit: a cap too low beats none
		log.Warn().Err(err).Msg("descriptor limit unknown; connection caps derived from 1024")
	}
	opts := connlimit.Defaults(nofile, cfg.MaxConnections, cfg.MaxConnectionsPerIP, cfg.MaxSubscribers)
	if uint64(opts.Max) >= nofile {
		log.Warn().Int("max_connections", opts.Max).Uint64("descriptor_limit", nofile).
			Msg("MAX_CONNECTIONS is not below the descriptor limit: a flood can still stop accept, health probes and the admin port")
	}
	opts.Exempt, opts.Logger, opts.Name = cfg.TrustedNets, log, "public"
	log.Info().Int("max_connections", opts.Max).Int("max_connections_per_ip", opts.MaxPerClient).
		Uint64("descriptor_limit", nofile).Msg("connection caps")
	return opts
}

// ingestGrace is how long the shutdown waits for POSTs in flight.
const ingestGrace = time.Second

// closeNow releases the hub and the sinks (the broker link, Kinesis) when
// the server never got going.
func closeNow(hub *broadcast.Hub, closeSinks ...func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range closeSinks {
		_ = c(ctx)
	}
	_ = hub.Close(ctx)
}

func newLogger(cfg config.Config, out io.Writer) zerolog.Logger {
	if cfg.LogFormat == "console" {
		// Colour codes only for a terminal: in a file or a log collector
		// they are noise.
		f, ok := out.(*os.File)
		tty := ok && isatty.IsTerminal(f.Fd())
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.RFC3339, NoColor: !tty}
	}
	return zerolog.New(out).Level(cfg.Level).With().Timestamp().Logger()
}

// adminMaxConns caps the admin port's connections: scrapers and probes
// need a few; it fits in the headroom the public port's default cap keeps.
const adminMaxConns = 32

// adminStuck is how long a request on the admin port may be in flight
// before, at the cap, it may be closed for a newcomer: metrics, probes and
// untimed profiles are answered well within it.
const adminStuck = 5 * time.Second

// adminServer is the operators' listener; the zero value stands for
// ADMIN_PORT=off.
type adminServer struct {
	ln net.Listener
	hs *http.Server
}

// startAdmin listens on the admin port and serves srv.Admin() there.
func startAdmin(cfg config.Config, srv *server.Server, log zerolog.Logger) (adminServer, error) {
	addr := cfg.AdminAddr()
	if addr == "" {
		return adminServer{}, nil
	}
	// An IPv4 address binds IPv4 only: Go would otherwise take 0.0.0.0 as
	// "every interface", IPv6 included.
	network := "tcp"
	if ip, err := netip.ParseAddr(cfg.AdminHost); err == nil && ip.Is4() {
		network = "tcp4"
	}
	raw, err := net.Listen(network, addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		// Most often a second copy on one machine, given another -port only.
		return adminServer{}, fmt.Errorf("listen on admin port %s: %w; each copy of the service on one machine needs its own admin port: set ADMIN_PORT (or -admin-port) to another port, 0 for a free one, or off", cfg.AdminPort, err)
	}
	if err != nil {
		return adminServer{}, fmt.Errorf("listen on admin port %s: %w", cfg.AdminPort, err)
	}
	// Its own small cap: whoever reaches the admin port cannot take the
	// descriptors the public port's cap leaves free.
	// A request in flight there for adminStuck is a client not reading its
	// answer: at the cap it is closed for a newcomer, whatever its address,
	// so that many addresses holding one such connection each cannot keep
	// the probes out. Timed profiles are marked as streams and kept.
	ln := connlimit.New(raw, connlimit.Options{Max: adminMaxConns, Logger: log, Name: "admin", Stuck: adminStuck})
	hs := srv.AdminHTTPServer()
	hs.ConnState = server.TrackConns(ln)
	hs.ConnContext = ln.ConnContext // lets a timed profile mark its connection
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("admin listener")
		}
	}()
	return adminServer{ln: ln, hs: hs}, nil
}

func (a adminServer) addr() string {
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

func (a adminServer) close() {
	if a.hs != nil {
		_ = a.hs.Close()
	}
}

// serveTLS wraps the public listener in TLS when TLS_CERT_FILE is set: a
// layer of its own over whatever listener it is given, so that other
// listener wrappers compose with it. The certificate is read again when
// its files change (package tlscert).
func serveTLS(cfg config.Config, ln net.Listener, log zerolog.Logger) (net.Listener, server.Certificate, error) {
	if !cfg.TLS() {
		return ln, nil, nil // a nil interface, not a nil *tlscert.Reloader
	}
	certs, err := tlscert.New(cfg.TLSCertFile, cfg.TLSKeyFile, 0, log)
	if err != nil {
		_ = ln.Close()
		return nil, nil, fmt.Errorf("TLS_CERT_FILE, TLS_KEY_FILE: %w", err) // config.Load read them a moment ago
	}
	if time.Now().After(certs.NotAfter()) {
		log.Warn().Time("not_after", certs.NotAfter()).Msg("the TLS certificate has expired; clients will refuse it until the files are renewed")
	}
	log.Info().Time("not_after", certs.NotAfter()).Msg("serving HTTPS with HTTP/2 and HTTP/1.1")
	return tls.NewListener(ln, certs.TLSConfig()), certs, nil
}

// streamLimiter is MAX_LISTENERS_PER_IP when set; by default, a share of
// the listener slots that keeps a reserve for other addresses
// (access.NewStreamShare): one address, however many streams it
// multiplexes on a few HTTP/2 connections, cannot take them all.
func streamLimiter(perIP, listeners int) *access.StreamLimiter {
	if perIP > 0 {
		return access.NewStreamLimiter(perIP)
	}
	return access.NewStreamShare(listeners)
}
