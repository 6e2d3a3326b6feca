// Command loadtest measures an event dispatcher (or any server with the
// same POST-in, SSE-out contract) from the outside: N SSE listeners and M
// publishers posting real player telemetry, with every delivery checked for
// loss and duplicates and its end-to-end latency measured. With -server-pid
// (same host) it also reports the server's CPU per event and memory per
// listener; -find-max searches for the highest sustainable rate.
//
// Each event is a fixture with "lt_seq", "lt_pub" and "lt_sent_ns" inserted
// as its first members. Runs are bounded in time and count; Ctrl-C stops
// early and still reports.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // the first Ctrl-C stops early with a report; a second one kills
	}()
	var progress io.Writer
	if isTerminal(os.Stdout) {
		progress = os.Stdout
	}
	err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr, progress)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// errUsage is returned after the flag errors have been printed.
var errUsage = errors.New("usage")

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runMain parses args, runs the test and prints the report to stdout.
// progress, when not nil, receives the live progress line (not with -json).
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer, progress io.Writer) error {
	cfg, asJSON, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if asJSON {
		progress = nil
	}
	rep, err := run(ctx, cfg, progress)
	if err != nil {
		return err
	}
	if asJSON {
		return rep.writeJSON(stdout)
	}
	rep.writeText(stdout)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, bool, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	rawURL := fs.String("url", "", "base URL of the dispatcher, e.g. http://127.0.0.1:3569 (required)")
	fs.StringVar(&cfg.IngestPath, "ingest-path", "/metrics", "path events are POSTed to (/metrics or /api/events)")
	fs.StringVar(&cfg.StreamPath, "stream-path", "/event-dispatcher", "SSE stream path (/event-dispatcher or /events)")
	fs.IntVar(&cfg.Listeners, "listeners", 1, "SSE listeners that read every event")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "concurrent publishers, each on its own keep-alive connection")
	fs.IntVar(&cfg.Stall, "stall", 0, "extra listeners that connect and never read (slow-listener scenario)")
	fs.IntVar(&cfg.StallRcvBuf, "stall-rcvbuf", 16<<10, "receive buffer of each -stall connection in bytes (0 = kernel default, autotuned up to net.ipv4.tcp_rmem)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "events per second over all publishers; 0 = as fast as possible")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (at most "+maxDuration.String()+")")
	fs.Uint64Var(&cfg.Events, "events", 0, "stop after this many events (0 = no cap)")
	fs.StringVar(&cfg.Fixture, "fixture", "start", "embedded payload: "+strings.Join(fixtureNames(), ", "))
	fs.BoolVar(&cfg.Raw, "raw", false, "send the fixture as stored (pretty-printed) instead of compact")
	fs.DurationVar(&cfg.Settle, "settle", 3*time.Second, "after the last POST, wait at most this long for deliveries")
	fs.DurationVar(&cfg.PostTimeout, "post-timeout", 10*time.Second, "a POST without an answer within this long is a transport error")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 30*time.Second, "time for one listener to connect and receive its first line")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "pid of the server on this host: report its CPU per event and RSS per listener from /proc")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the load tool's own CPU profile to this file")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the summary")
	fs.BoolVar(&cfg.FindMax, "find-max", false, "raise the rate step by step until loss > 0.1 %, p99 > 1 s, a POST fails or a listener is lost; report the highest passing rate")
	fs.Float64Var(&cfg.StartRate, "start-rate", 100, "-find-max: first rate, events/s")
	fs.Float64Var(&cfg.Factor, "factor", 1.5, "-find-max: rate multiplier between steps")
	fs.DurationVar(&cfg.Step, "step", 5*time.Second, "-find-max: publishing time of one step")
	fs.IntVar(&cfg.MaxSteps, "max-steps", 20, "-find-max: at most this many steps")
	fs.IntVar(&cfg.Refine, "refine", 2, "-find-max: after the first failure, this many steps between the best passing and the failing rate")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loadtest -url http://HOST:PORT [flags]\n\n"+
			"Runs SSE listeners and publishers against an event dispatcher and reports\n"+
			"loss, duplicates, end-to-end latency and, with -server-pid, server CPU and memory.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, false, err
		}
		return cfg, false, errUsage
	}
	if fs.NArg() > 0 {
		return cfg, false, usageError(fs, "unexpected argument %q", fs.Arg(0))
	}
	if *rawURL == "" {
		return cfg, false, usageError(fs, "-url is required: the dispatcher to test, e.g. -url http://127.0.0.1:3569")
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cfg, false, usageError(fs, "-url %q: want http://HOST:PORT or https://HOST:PORT", *rawURL)
	}
	cfg.URL = u
	switch {
	case cfg.Listeners < 0 || cfg.Stall < 0 || cfg.StallRcvBuf < 0:
		return cfg, false, usageError(fs, "-listeners, -stall and -stall-rcvbuf cannot be negative")
	case cfg.Publishers < 1:
		return cfg, false, usageError(fs, "-publishers must be at least 1")
	case cfg.Rate < 0:
		return cfg, false, usageError(fs, "-rate cannot be negative")
	case cfg.Duration <= 0 || cfg.Duration > maxDuration:
		return cfg, false, usageError(fs, "-duration must be within (0, %s]", maxDuration)
	case cfg.Settle < 0 || cfg.Settle > time.Minute:
		return cfg, false, usageError(fs, "-settle must be within [0, 1m]")
	case cfg.PostTimeout <= 0 || cfg.ConnectTimeout <= 0:
		return cfg, false, usageError(fs, "-post-timeout and -connect-timeout must be positive")
	case cfg.FindMax && (cfg.StartRate <= 0 || cfg.Factor <= 1 || cfg.Step <= 0 || cfg.Step > maxDuration || cfg.MaxSteps < 1 || cfg.Refine < 0):
		return cfg, false, usageError(fs, "-find-max needs -start-rate > 0, -factor > 1, -step within (0, %s], -max-steps >= 1, -refine >= 0", maxDuration)
	case cfg.ServerPID < 0:
		return cfg, false, usageError(fs, "-server-pid cannot be negative")
	}
	if _, err := loadFixture(cfg.Fixture, cfg.Raw); err != nil {
		return cfg, false, usageError(fs, "-fixture: %v", err)
	}
	return cfg, *asJSON, nil
}

func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "loadtest: "+format+"\n", args...)
	fmt.Fprintln(fs.Output(), "Run loadtest -h for every flag.")
	return errUsage
}
