// Command loadtest measures an event dispatcher (or any server with the
// same POST-in, SSE-out contract) from the outside: N SSE listeners and M
// publishers posting real player telemetry, with every delivery checked for
// loss and duplicates and its end-to-end latency measured. With -server-pid
// (same host) it also reports the server's CPU per event and memory per
// listener; -find-max searches for the highest sustainable rate; -scenario
// storm and -scenario disconnect measure a reconnect storm and a mass
// disconnect. Several -url spread the load over replicas.
//
// Each event is a fixture with "lt_seq", "lt_pub" and "lt_sent_ns" inserted
// as its first members. Runs are bounded in time and count; Ctrl-C stops
// early and still reports. The exit status is 0 only when loss, failed
// POSTs and failed listeners are all within -max-loss, so a run is a check.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
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
	err := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr, terminals{stdout: isTerminal(os.Stdout), stderr: isTerminal(os.Stderr)})
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

// errCheck wraps the reasons a run failed its check (-max-loss).
var errCheck = errors.New("check failed")

// terminals says which of stdout and stderr are terminals: the progress
// line rewrites itself there, and prints a line every -progress otherwise.
type terminals struct{ stdout, stderr bool }

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// runMain parses args, prints the settings, runs the test and prints the
// report to stdout (with -json, the settings and progress go to stderr so
// that stdout is one JSON object). It returns an error wrapping errCheck
// when the run failed its check.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer, tty terminals) error {
	cfg, asJSON, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := raiseFileLimit(cfg.descriptorsNeeded()); err != nil {
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
	info, isTTY := stdout, tty.stdout
	if asJSON {
		info, isTTY = stderr, tty.stderr
	}
	writeSettings(info, cfg)
	var prog *progress
	if isTTY || cfg.Progress > 0 {
		prog = &progress{w: info, tty: isTTY, every: cfg.Progress}
	}
	rep, err := run(ctx, cfg, prog)
	if err != nil {
		return err
	}
	if asJSON {
		if err := rep.writeJSON(stdout); err != nil {
			return err
		}
	} else {
		rep.writeText(stdout)
	}
	if !rep.Check.Pass {
		return fmt.Errorf("%w: %s", errCheck, strings.Join(rep.Check.Failures, "; "))
	}
	return nil
}

// Scenarios.
const (
	scenarioSteady     = "steady"
	scenarioStorm      = "storm"
	scenarioDisconnect = "disconnect"
)

func parseFlags(args []string, stderr io.Writer) (config, bool, error) {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var urls []string
	publishURL := fs.String("publish-url", "", "publishers POST to this dispatcher instead of -url, whose listeners get the events through it (an upstream relay chain: the -url dispatchers follow it with UPSTREAM_URLS)")
	fs.Var(listFlag[string]{&urls, parseString}, "url", "the dispatcher's base `URLs`, e.g. http://127.0.0.1:3569 (required); several replicas: a comma-separated list or the flag repeated, listeners and publishers are spread round-robin and every listener must receive every event accepted by any of them")
	fs.StringVar(&cfg.IngestPath, "ingest-path", "/api/events", "path events are POSTed to (/api/events, or its alias /metrics)")
	fs.StringVar(&cfg.StreamPath, "stream-path", "/events", "SSE stream path (/events, or its alias /event-dispatcher)")
	fs.StringVar(&cfg.HealthPath, "health-path", "/health", "storm, disconnect: JSON health path polled for its \"listeners\" and status code (\"\" = none)")
	fs.StringVar(&cfg.Scenario, "scenario", scenarioSteady, "steady: connect the listeners, then publish; "+
		"storm: publish, and -warmup later connect the -listeners all at once (or over -ramp), reporting time to the first byte; "+
		"disconnect: connect the -listeners, publish, and -warmup later close all but -survivors at once, reporting the survivors' latency per -window and when the server released the others")
	fs.IntVar(&cfg.Listeners, "listeners", 1, "SSE listeners that read every event")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "concurrent publishers, each on its own keep-alive connection")
	fs.IntVar(&cfg.Stall, "stall", 0, "extra listeners that connect and never read (slow-listener scenario)")
	fs.IntVar(&cfg.StallRcvBuf, "stall-rcvbuf", 16<<10, "receive buffer of each -stall connection in bytes (0 = kernel default, autotuned up to net.ipv4.tcp_rmem)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "events per second over all publishers; 0 = as fast as possible")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (at most "+maxDuration.String()+")")
	fs.Uint64Var(&cfg.Events, "events", 0, "stop after this many events (0 = no cap)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "storm, disconnect: publishing time before the listeners connect or leave")
	fs.DurationVar(&cfg.Ramp, "ramp", 0, "storm: spread the listeners' connection starts evenly over this long (0 = all at once)")
	fs.IntVar(&cfg.Survivors, "survivors", 10, "disconnect: listeners that stay connected")
	fs.DurationVar(&cfg.Window, "window", time.Second, "disconnect: width of the windows the survivors' latency is reported in, by publish time")
	fs.Var(listFlag[time.Duration]{&cfg.RSSAfter, parseDuration}, "rss-after", "disconnect, with -server-pid: also sample the server's RSS these `durations` after the disconnect, e.g. 10s,60s (the run waits for the last one)")
	fs.StringVar(&cfg.Fixture, "fixture", "start", "embedded payload: "+strings.Join(fixtureNames(), ", "))
	fs.BoolVar(&cfg.Raw, "raw", false, "send the fixture as stored (pretty-printed) instead of compact")
	fs.DurationVar(&cfg.Settle, "settle", 3*time.Second, "after the last POST, wait at most this long for deliveries")
	fs.DurationVar(&cfg.PostTimeout, "post-timeout", 10*time.Second, "a POST without an answer within this long is a transport error")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 30*time.Second, "time for one listener to connect and receive its first line")
	fs.Var(listFlag[int]{&cfg.ServerPIDs, parsePID}, "server-pid", "`pids` of the server on this host (comma-separated for several processes, summed): report its CPU per event and RSS per listener from /proc")
	fs.Float64Var(&cfg.MaxLoss, "max-loss", 0, "exit status 1 when lost, duplicate or out-of-order deliveries, failed POSTs (non-2xx or transport error) or failed listeners (refused, not 200, dropped) exceed this percentage of theirs")
	fs.Float64Var(&cfg.MinRate, "min-rate", 90, "with -rate, exit status 1 when fewer than this percentage of it were accepted per second (publishers waiting on a slow server never applied the load asked for); 0 = no rate check")
	fs.DurationVar(&cfg.Progress, "progress", 5*time.Second, "when the output is not a terminal, print a progress line this often (0 = never); on a terminal it is rewritten every second")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write the load tool's own CPU profile to this file")
	fs.BoolVar(&cfg.HTTP2, "http2", false, "listeners and publishers speak HTTP/2 only: over TLS (ALPN h2) to https:// URLs, cleartext with prior knowledge (h2c) to http://; listeners share connections (-streams-per-conn), the publishers one per replica")
	fs.IntVar(&cfg.StreamsPerConn, "streams-per-conn", 100, "-http2: listeners per HTTP/2 connection (the dispatcher allows 250 streams on one)")
	fs.StringVar(&cfg.CACert, "cacert", "", "PEM `file` of certificates to trust besides the system's, for https:// URLs (e.g. the server's self-signed TLS_CERT_FILE)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of the summary (settings and progress go to stderr)")
	fs.BoolVar(&cfg.FindMax, "find-max", false, "raise the rate step by step until loss > 0.1 %, p99 > 1 s, a POST fails or a listener is lost; report the highest passing rate (the run fails its check only when no step passed)")
	fs.Float64Var(&cfg.StartRate, "start-rate", 100, "-find-max: first rate, events/s")
	fs.Float64Var(&cfg.Factor, "factor", 1.5, "-find-max: rate multiplier between steps")
	fs.DurationVar(&cfg.Step, "step", 5*time.Second, "-find-max: publishing time of one step")
	fs.IntVar(&cfg.MaxSteps, "max-steps", 20, "-find-max: at most this many steps")
	fs.IntVar(&cfg.Refine, "refine", 2, "-find-max: after the first failure, this many steps between the best passing and the failing rate")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: loadtest -url http://HOST:PORT[,http://HOST2:PORT] [flags]\n\n"+
			"Runs SSE listeners and publishers against an event dispatcher and reports\n"+
			"loss, duplicates, end-to-end latency and, with -server-pid, server CPU and memory.\n"+
			"Exit status: 0 when the run passed its check (see -max-loss), 1 when it failed\n"+
			"or could not run, 2 for bad flags.\n\n"+
			"Scenarios at 10,000 listeners (ulimit -n 10100 or more here; the dispatcher\n"+
			"needs MAX_SUBSCRIBERS above the listeners):\n"+
			"  loadtest -url URL -scenario storm -listeners 10000 -publishers 32 -rate 200 -duration 30s \\\n"+
			"      -warmup 2s -settle 30s -connect-timeout 60s -server-pid PID\n"+
			"  loadtest -url URL -scenario disconnect -listeners 10010 -survivors 10 -publishers 32 -rate 200 \\\n"+
			"      -duration 12s -warmup 2s -settle 30s -server-pid PID -rss-after 10s,60s\n\n")
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
	if len(urls) == 0 {
		return cfg, false, usageError(fs, "-url is required: the dispatcher to test, e.g. -url http://127.0.0.1:3569")
	}
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, false, usageError(fs, "-url %q: want http://HOST:PORT or https://HOST:PORT", raw)
		}
		cfg.URLs = append(cfg.URLs, u)
	}
	if *publishURL != "" {
		u, err := url.Parse(*publishURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return cfg, false, usageError(fs, "-publish-url %q: want http://HOST:PORT or https://HOST:PORT", *publishURL)
		}
		cfg.PublishURL = u
	}
	switch {
	case slices.ContainsFunc([]float64{cfg.Rate, cfg.MaxLoss, cfg.MinRate, cfg.StartRate, cfg.Factor}, notFinite):
		// NaN compares false with every bound: -max-loss NaN would pass any run.
		return cfg, false, usageError(fs, "-rate, -max-loss, -min-rate, -start-rate and -factor must be finite numbers")
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
	case slices.ContainsFunc(cfg.ServerPIDs, func(p int) bool { return p <= 0 }):
		return cfg, false, usageError(fs, "-server-pid must be positive")
	case cfg.MaxLoss < 0 || cfg.MaxLoss > 100:
		return cfg, false, usageError(fs, "-max-loss is a percentage within [0, 100]")
	case cfg.MinRate < 0 || cfg.MinRate > 100:
		return cfg, false, usageError(fs, "-min-rate is a percentage within [0, 100]")
	case cfg.Progress < 0:
		return cfg, false, usageError(fs, "-progress cannot be negative")
	case cfg.HTTP2 && (cfg.StreamsPerConn < 1 || cfg.Stall > 0):
		return cfg, false, usageError(fs, "-http2 needs -streams-per-conn of at least 1, and no -stall (stalled listeners are HTTP/1.1 connections)")
	case cfg.HTTP2 && slices.ContainsFunc(cfg.URLs, func(u *url.URL) bool { return u.Scheme != cfg.URLs[0].Scheme }):
		return cfg, false, usageError(fs, "-http2: every -url must have the same scheme")
	}
	switch cfg.Scenario {
	case scenarioSteady:
	case scenarioStorm, scenarioDisconnect:
		switch {
		case cfg.FindMax:
			return cfg, false, usageError(fs, "-find-max runs the steady scenario only")
		case cfg.Warmup < 0 || cfg.Warmup >= cfg.Duration:
			return cfg, false, usageError(fs, "-warmup must be within [0, -duration)")
		case cfg.Listeners < 1:
			return cfg, false, usageError(fs, "-scenario %s needs -listeners of at least 1", cfg.Scenario)
		case cfg.Scenario == scenarioStorm && (cfg.Ramp < 0 || cfg.Ramp > maxDuration):
			return cfg, false, usageError(fs, "-ramp must be within [0, %s]", maxDuration)
		case cfg.Scenario == scenarioDisconnect && (cfg.Survivors < 0 || cfg.Survivors >= cfg.Listeners):
			return cfg, false, usageError(fs, "-survivors must be within [0, -listeners)")
		case cfg.Scenario == scenarioDisconnect && (cfg.Window < 10*time.Millisecond || cfg.Duration/cfg.Window > 600):
			return cfg, false, usageError(fs, "-window must be at least 10ms and -duration at most 600 windows")
		case slices.ContainsFunc(cfg.RSSAfter, func(d time.Duration) bool { return d <= 0 || d > maxDuration }):
			return cfg, false, usageError(fs, "-rss-after: each must be within (0, %s]", maxDuration)
		}
	default:
		return cfg, false, usageError(fs, "-scenario %q: want steady, storm or disconnect", cfg.Scenario)
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

// listFlag is a repeatable flag of comma-separated values.
type listFlag[T any] struct {
	vals  *[]T
	parse func(string) (T, error)
}

func (l listFlag[T]) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Trim(fmt.Sprint(*l.vals), "[]")
}

func (l listFlag[T]) Set(s string) error {
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		x, err := l.parse(v)
		if err != nil {
			return err
		}
		*l.vals = append(*l.vals, x)
	}
	return nil
}

func parseString(s string) (string, error) { return s, nil }

func notFinite(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }

func parsePID(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a process id", s)
	}
	return n, nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 10s", s)
	}
	return d, nil
}
