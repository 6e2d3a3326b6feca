// Command event_dispatcher receives player telemetry over HTTP POST and
// broadcasts every event live to all listeners of a Server-Sent-Events
// stream. Configuration comes from environment variables; -h lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"event-dispatcher/pkg/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, nil); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "event_dispatcher:", err)
		os.Exit(1)
	}
}

// run loads the configuration and serves until ctx ends. ready, when not
// nil, receives the listening address once the server accepts connections.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, ready chan<- string) error {
	if isHealthcheck(args) { // probe a running instance instead of serving
		return healthcheck(ctx, args[1:], stdout, stderr)
	}
	cfg, err := config.Load(args, stdout) // -h prints on stdout
	if errors.Is(err, config.ErrVersion) {
		fmt.Fprintln(stdout, "event_dispatcher", version)
		return nil
	}
	if err != nil {
		return err
	}
	misses := config.NearMisses(os.Environ())
	if err := config.OpenByMistake(cfg, misses); err != nil {
		return err
	}
	return serve(ctx, cfg, misses, stdout, ready)
}

// signalContext returns a context that ends at the first SIGINT or SIGTERM,
// which starts the graceful shutdown. A second one exits at once: whoever
// sends it does not want to wait.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		s := <-sigs
		fmt.Fprintf(os.Stderr, "event_dispatcher: second %v, exiting now\n", s)
		os.Exit(1)
	}()
	return ctx, func() { signal.Stop(sigs); cancel() }
}
