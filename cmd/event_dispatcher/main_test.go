package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/internal/testenv"
	"event-dispatcher/pkg/config"
)

// binary is the command built once by TestMain; the process tests run it.
// Set before any test runs and never changed afterwards.
var binary string

// testVersion is stamped into the binary, so the start-up line can be
// checked for it.
const testVersion = "test-build"

// TestMain builds the binary, runs the tests and says which were skipped
// for want of a program (see internal/testenv).
func TestMain(m *testing.M) {
	code := testMain(m)
	testenv.Report()
	os.Exit(code)
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "event_dispatcher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// The admin port's default is fixed; tests, run in parallel, take free
	// ports, here for in-process runs and in childEnv for the binary.
	if err := os.Setenv("ADMIN_PORT", "0"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binary = filepath.Join(dir, "event_dispatcher")
	// Built as the Dockerfile builds it (static, -trimpath): the binary
	// tested is the one shipped, and the build cache holds one such build
	// for these tests, cmd/loadtest's and deploy's instead of two.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+testVersion, "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the command: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// envNames lists every variable the service reads, from config.Config's
// tags, so that no test environment can leak a forgotten one.
func envNames() []string {
	var out []string
	t := reflect.TypeFor[config.Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("envconfig"); name != "" && t.Field(i).Tag.Get("ignored") != "true" {
			out = append(out, name)
		}
	}
	return out
}

// childEnv is this process's environment without any service variable,
// plus a free admin port and kv ("NAME=value" each; the last of a name wins).
func childEnv(kv ...string) []string {
	names := envNames()
	env := slices.DeleteFunc(os.Environ(), func(e string) bool {
		name, _, _ := strings.Cut(e, "=")
		return slices.Contains(names, name)
	})
	// MAX_FANOUT_LAG=1m: a starved test machine must not make the default
	// second of fan-out lag refuse events in tests about something else.
	return append(append(env, "ADMIN_PORT=0", "MAX_FANOUT_LAG=1m"), kv...)
}

// logSink collects what a writer receives, line by line, safe for
// concurrent writers; waitFor lets a test wait for a log line.
type logSink struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	grew    chan struct{} // closed and replaced whenever a line arrives
}

func newLogSink() *logSink { return &logSink{grew: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		s.lines = append(s.lines, string(s.partial[:i]))
		s.partial = s.partial[i+1:]
		added = true
	}
	if added {
		close(s.grew)
		s.grew = make(chan struct{})
	}
	return len(p), nil
}

// String returns everything written so far.
func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n") + "\n" + string(s.partial)
}

// records returns the JSON log lines whose message is msg.
func (s *logSink) records(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range s.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["message"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// waitFor returns the first log line with message msg. It fails the test if
// gone is closed or the guard passes first.
func (s *logSink) waitFor(t *testing.T, msg string, gone <-chan struct{}, guard time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(guard)
	for {
		s.mu.Lock()
		grew := s.grew
		s.mu.Unlock()
		if recs := s.records(msg); len(recs) > 0 {
			return recs[0]
		}
		select {
		case <-grew:
		case <-gone:
			if recs := s.records(msg); len(recs) > 0 {
				return recs[0]
			}
			t.Fatalf("ended before logging %q; output:\n%s", msg, s)
		case <-deadline:
			t.Fatalf("no %q log line within %s; output:\n%s", msg, guard, s)
		}
	}
}

// process is one running instance of the built command.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr *logSink
	gone           chan struct{} // closed when the process has exited
	err            error         // cmd.Wait's result; read after gone
}

// startProcess runs the binary with args and a clean environment plus env.
// The process is killed at cleanup if still running.
func startProcess(t *testing.T, args []string, env ...string) *process {
	t.Helper()
	return startCommand(t, exec.Command(binary, args...), env...)
}

// startCommand is startProcess for a command that runs the binary (under
// prlimit, say).
func startCommand(t *testing.T, cmd *exec.Cmd, env ...string) *process {
	t.Helper()
	p := &process{cmd: cmd, stdout: newLogSink(), stderr: newLogSink(), gone: make(chan struct{})}
	p.cmd.Env = childEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.gone)
	}()
	t.Cleanup(func() {
		select {
		case <-p.gone:
		default:
			_ = p.cmd.Process.Kill()
			<-p.gone
		}
	})
	return p
}

// exitedCleanly waits for the process to end and fails the test unless it
// exited 0 without logging an incomplete graceful shutdown; what names the
// thing that would have held the shutdown.
func (p *process) exitedCleanly(t *testing.T, guard time.Duration, what string) {
	t.Helper()
	if code := p.exit(t, guard); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, p.stderr)
	}
	if recs := p.stdout.records("graceful shutdown incomplete; closing remaining connections"); len(recs) > 0 {
		t.Errorf("%s held the shutdown until SHUTDOWN_TIMEOUT: %v", what, recs[0]["error"])
	}
}

// exit waits for the process to end and returns its exit code; the guard
// only stops a hung process from hanging the test.
func (p *process) exit(t *testing.T, guard time.Duration) int {
	t.Helper()
	select {
	case <-p.gone:
	case <-time.After(guard):
		_ = p.cmd.Process.Kill()
		<-p.gone
		t.Fatalf("still running after %s; stdout:\n%s\nstderr:\n%s", guard, p.stdout, p.stderr)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("waiting for the process: %v", p.err)
		return -1
	}
}

// listening waits for the start-up log line and returns it with the base
// URL of the instance on 127.0.0.1.
func (p *process) listening(t *testing.T) (map[string]any, string) {
	t.Helper()
	rec := p.stdout.waitFor(t, "event dispatcher listening", p.gone, 30*time.Second)
	return rec, baseURL(t, rec["addr"])
}

// baseURL turns a listen address such as "[::]:41234" into the URL of the
// same port on 127.0.0.1.
func baseURL(t *testing.T, addr any) string {
	t.Helper()
	s, _ := addr.(string)
	_, port, err := net.SplitHostPort(s)
	if err != nil || port == "0" {
		t.Fatalf("listen address %q: %v", s, err)
	}
	return "http://" + net.JoinHostPort("127.0.0.1", port)
}

func TestInvalidEnvironmentExitsBeforeListening(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"PORT", nil, []string{"PORT=abc"}, "PORT"},
		{"HEARTBEAT_INTERVAL", nil, []string{"PORT=0", "HEARTBEAT_INTERVAL=banana"}, "HEARTBEAT_INTERVAL"},
		{"LOG_FORMAT", nil, []string{"PORT=0", "LOG_FORMAT=xml"}, "LOG_FORMAT"},
		{"TRUSTED_PROXY_CIDRS", nil, []string{"PORT=0", "TRUSTED_PROXY_CIDRS=nonsense"}, "TRUSTED_PROXY_CIDRS"},
		{"-port", []string{"-port", "abc"}, nil, "-port"},
		{"stray argument", []string{"serve"}, []string{"PORT=0"}, "unexpected argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t, tc.args, tc.env...)
			if code := p.exit(t, 30*time.Second); code == 0 {
				t.Errorf("exit code 0, want non-zero")
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not name %s:\n%s", tc.want, stderr)
			}
			if out := strings.TrimSpace(p.stdout.String()); out != "" {
				t.Errorf("wrote to stdout before exiting (should not have started): %s", out)
			}
		})
	}
}

func TestHelpListsVariablesAndExitsZero(t *testing.T) {
	for _, arg := range []string{"-h", "-help"} {
		t.Run(arg, func(t *testing.T) {
			p := startProcess(t, []string{arg}, "PORT=abc") // -h answers even with a bad environment
			if code := p.exit(t, 30*time.Second); code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr)
			}
			// On stdout, so that "event_dispatcher -h | less" works.
			out := p.stdout.String()
			if errOut := strings.TrimSpace(p.stderr.String()); errOut != "" {
				t.Errorf("help wrote to stderr: %s", errOut)
			}
			for _, name := range append(envNames(), "-port", "-healthcheck", "-version") {
				if !strings.Contains(out, name) {
					t.Errorf("help does not mention %s:\n%s", name, out)
				}
			}
			if strings.Contains(out, "listening") {
				t.Errorf("help started the server:\n%s", out)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	p := startProcess(t, []string{"-version"}, "PORT=abc")
	if code := p.exit(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr)
	}
	if got := strings.TrimSpace(p.stdout.String()); got != "event_dispatcher "+testVersion {
		t.Errorf("-version printed %q, want %q", got, "event_dispatcher "+testVersion)
	}
}

// Each configuration mistake stops the binary with a message that says what
// is wrong and what is expected.
func TestMistakesExplained(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"origins set but empty", nil, []string{"CORS_ALLOWED_ORIGINS= , "},
			"CORS_ALLOWED_ORIGINS: is empty; list origins, or use * to allow any"},
		{"duration without unit", nil, []string{"HEARTBEAT_INTERVAL=5"},
			`HEARTBEAT_INTERVAL: "5" is not a duration; use a number with a unit, such as 5s or 500ms`},
		{"size with a unit", nil, []string{"MAX_BODY_BYTES=64k"},
			`MAX_BODY_BYTES: "64k" is not a whole number of bytes; use digits only, such as 65536`},
		{"unknown flag", []string{"-verbose"}, nil,
			"flag provided but not defined: -verbose (-h lists flags and variables)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t, tc.args, append([]string{"PORT=0"}, tc.env...)...)
			if code := p.exit(t, 30*time.Second); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if got := strings.TrimSpace(p.stderr.String()); got != "event_dispatcher: "+tc.want {
				t.Errorf("stderr:\n%s\nwant:\nevent_dispatcher: %s", got, tc.want)
			}
		})
	}
}

// Configurations a release before accepted keep starting: a risky one
// with a warning naming the variable.
func TestReleasedConfigurationsStart(t *testing.T) {
	for _, env := range [][]string{
		{"CORS_ALLOWED_ORIGINS=*,https://a.example"},
		{"CORS_ALLOWED_ORIGINS=a.example"},
		{"SHUTDOWN_TIMEOUT=5s"},
	} {
		p := startProcess(t, nil, append([]string{"PORT=0"}, env...)...)
		p.listening(t)
		name, _, _ := strings.Cut(env[0], "=")
		recs := p.stdout.records("risky setting")
		if len(recs) == 0 {
			t.Errorf("%v: no risky setting line", env)
		}
		for _, r := range recs {
			if r["variable"] != name {
				t.Errorf("%v: risky setting %v, want it to name %s", env, r, name)
			}
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.exitedCleanly(t, 30*time.Second, "nothing")
	}
}

// A misspelt variable is not silently ignored: the service starts (the
// setting keeps its default) and warns, naming the variable it resembles;
// variables that are not like ours are left alone.
func TestNearMissVariableWarned(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "HEARTBEAT_INTERVL=1s", "SOMETHING_ELSE_ENTIRELY=1")
	rec, _ := p.listening(t)
	warns := p.stdout.records("environment variable not used by the service; a typo?")
	if len(warns) != 1 || warns[0]["variable"] != "HEARTBEAT_INTERVL" || warns[0]["did_you_mean"] != "HEARTBEAT_INTERVAL" || warns[0]["level"] != "warn" {
		t.Errorf("warnings %v, want one for HEARTBEAT_INTERVL, like HEARTBEAT_INTERVAL", warns)
	}
	if cfg, _ := rec["config"].(map[string]any); cfg["HEARTBEAT_INTERVAL"] != "5s" {
		t.Errorf("HEARTBEAT_INTERVAL %v, want the default 5s", cfg["HEARTBEAT_INTERVAL"])
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exit(t, 30*time.Second)
}

// LOG_FORMAT=console writes colour codes only to a terminal; here stdout
// is a pipe, as under a process manager or a log collector.
func TestConsoleLogsWithoutColourOffTerminal(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "LOG_FORMAT=console")
	deadline := time.After(30 * time.Second)
	for !strings.Contains(p.stdout.String(), "event dispatcher listening") {
		select {
		case <-p.gone:
			t.Fatalf("exited; stderr:\n%s", p.stderr)
		case <-deadline:
			t.Fatalf("no start-up line; stdout:\n%s", p.stdout)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if out := p.stdout.String(); strings.Contains(out, "\x1b[") {
		t.Errorf("colour codes written to a pipe: %q", out)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exit(t, 30*time.Second)
}

func TestBusyPort(t *testing.T) {
	first := startProcess(t, nil, "PORT=0")
	rec, _ := first.listening(t)
	_, port, _ := net.SplitHostPort(rec["addr"].(string))

	second := startProcess(t, []string{"-port", port})
	if code := second.exit(t, 30*time.Second); code == 0 {
		t.Fatalf("second instance on port %s exited 0", port)
	}
	stderr := second.stderr.String()
	for _, want := range []string{"listen on port " + port, "address already in use"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if recs := second.stdout.records("event dispatcher listening"); len(recs) > 0 {
		t.Errorf("second instance claims to listen: %v", recs)
	}
	// The first instance is unaffected and still stops cleanly.
	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.exit(t, 30*time.Second); code != 0 {
		t.Errorf("first instance exit code %d; stderr:\n%s", code, first.stderr)
	}
}

// A second copy on one machine, given another -port only, finds the admin
// port taken: the error says how to fix it, and -admin-port does.
func TestSecondCopyNeedsItsOwnAdminPort(t *testing.T) {
	first := startProcess(t, nil, "PORT=0")
	rec, _ := first.listening(t)
	_, admin, _ := net.SplitHostPort(rec["admin_addr"].(string))

	second := startProcess(t, []string{"-port", "0"}, "ADMIN_PORT="+admin)
	if code := second.exit(t, 30*time.Second); code == 0 {
		t.Fatalf("second instance on admin port %s exited 0", admin)
	}
	stderr := second.stderr.String()
	for _, want := range []string{"listen on admin port " + admin, "address already in use",
		"each copy of the service on one machine needs its own admin port: set ADMIN_PORT (or -admin-port) to another port, 0 for a free one, or off"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	third := startProcess(t, []string{"-port", "0", "-admin-port", "0"}, "ADMIN_PORT="+admin)
	rec3, _ := third.listening(t)
	if _, got, _ := net.SplitHostPort(rec3["admin_addr"].(string)); got == admin || got == "0" {
		t.Errorf("-admin-port 0: admin address %v, want a free port of its own", rec3["admin_addr"])
	}
	for _, p := range []*process{first, third} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.exit(t, 30*time.Second); code != 0 {
			t.Errorf("exit code %d; stderr:\n%s", code, p.stderr)
		}
	}
}

// The start-up line states the version, the real address and the effective
// value of every variable.
func TestStartupLineShowsEffectiveConfig(t *testing.T) {
	p := startProcess(t, []string{"-port", "0"}, "PORT=1", "HEARTBEAT_INTERVAL=1m30s", "CLIENT_IP_FIELD=user_ip", "MAX_SUBSCRIBERS=77",
		"CORS_ALLOWED_ORIGINS=HTTPS://A.example:443/, https://b.example:8443", "LOG_LEVEL=INFO", "TRUSTED_PROXY_CIDRS=10.1.2.3/8")
	rec, base := p.listening(t)
	if rec["version"] != testVersion {
		t.Errorf("version %v, want %q", rec["version"], testVersion)
	}
	if rec["level"] != "info" {
		t.Errorf("level %v, want info", rec["level"])
	}
	cfg, _ := rec["config"].(map[string]any)
	for _, name := range envNames() {
		if _, ok := cfg[name]; !ok {
			t.Errorf("start-up line lacks %s: %v", name, rec)
		}
	}
	for name, want := range map[string]string{
		"PORT": "0", "HEARTBEAT_INTERVAL": "1m30s", "CLIENT_IP_FIELD": "user_ip", "MAX_SUBSCRIBERS": "77",
		"MAX_BODY_BYTES": "65536", "SHUTDOWN_TIMEOUT": "15s", "LOG_FORMAT": "json", "ADMIN_PORT": "0",
		// As the service understood them.
		"CORS_ALLOWED_ORIGINS": "https://a.example,https://b.example:8443", "LOG_LEVEL": "info", "TRUSTED_PROXY_CIDRS": "10.0.0.0/8",
	} {
		if got := cfg[name]; got != want {
			t.Errorf("%s = %v in the start-up line, want %q", name, got, want)
		}
	}
	// The logged address is the one that answers.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/health")
	if err != nil {
		t.Fatalf("GET %s/health: %v", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/health status %d", resp.StatusCode)
	}
	// So does the logged admin address, with the operators' routes.
	admin := baseURL(t, rec["admin_addr"])
	for _, path := range []string{"/livez", "/readyz", "/metrics"} {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(admin + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", admin, path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("admin %s status %d", path, resp.StatusCode)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d; stderr:\n%s", code, p.stderr)
	}
}

func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	p := startProcess(t, nil, append(shutdownEnv(), "SHUTDOWN_TIMEOUT="+shutdownTimeout.String())...)
	_, base := p.listening(t)
	exited := make(chan error, 1)
	go func() {
		<-p.gone
		if p.err != nil {
			exited <- fmt.Errorf("%w; stderr:\n%s", p.err, p.stderr)
		}
		close(exited)
	}()
	checkGracefulShutdown(t, instance{
		base: base,
		logs: p.stdout,
		stop: func() {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		},
		exited:          exited,
		shutdownTimeout: shutdownTimeout,
	})
}

// A client that opened a connection but sent nothing yet (a pre-connecting
// browser, a TCP health probe) has nothing in flight: the shutdown must not
// wait on it until SHUTDOWN_TIMEOUT and then report itself incomplete.
func TestShutdownNotHeldBySilentConnection(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "SHUTDOWN_TIMEOUT=1s", "WRITE_TIMEOUT=500ms")
	_, base := p.listening(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Make sure the server has accepted it: a request on another connection
	// is answered only after the accept loop has moved past ours.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 30*time.Second, "an accepted connection that sent no request")
}

func TestAdminPortOff(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "ADMIN_PORT=off")
	rec, _ := p.listening(t)
	if rec["admin_addr"] != "" {
		t.Errorf("ADMIN_PORT=off, but the start-up line shows admin_addr %v", rec["admin_addr"])
	}
}

func TestBusyAdminPort(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p := startProcess(t, nil, "PORT=0", "ADMIN_PORT="+port)
	if code := p.exit(t, 30*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "listen on admin port "+port) {
		t.Errorf("exit code %d, stderr %q; want 1 and the admin port named", code, p.stderr)
	}
}

// A second SIGTERM while the first one's shutdown waits on a stream that
// takes nothing ends the process at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "SHUTDOWN_TIMEOUT=2m", "WRITE_TIMEOUT=1m", "DRAIN_DELAY=1m")
	p.listening(t)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.stdout.waitFor(t, "draining", p.gone, 30*time.Second) // the first signal was handled
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Without the second signal the process would drain for a minute.
	if code := p.exit(t, 20*time.Second); code != 1 {
		t.Errorf("exit code %d after the second SIGTERM, want 1; stderr:\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "second terminated, exiting now") {
		t.Errorf("stderr %q does not say why it exited", p.stderr)
	}
}

// During DRAIN_DELAY the instance tells load balancers and readiness
// probes it is draining while it still serves everyone, new connections
// included: a load balancer sees the 503 before any connection is refused.
// Liveness stays up.
func TestDrainDelayServesWhileHealthSaysDraining(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "DRAIN_DELAY=1m", "SHUTDOWN_TIMEOUT=2m", "WRITE_TIMEOUT=1m")
	rec, base := p.listening(t)
	admin := baseURL(t, rec["admin_addr"])
	client := &http.Client{Timeout: 10 * time.Second}
	status := func(method, url, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s while draining: %v", method, url, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	before := ssetest.Subscribe(t, client, base+"/events", nil)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.stdout.waitFor(t, "draining", p.gone, 30*time.Second)
	for _, c := range []struct {
		url  string
		want int
	}{{base + "/health", 503}, {admin + "/readyz", 503}, {admin + "/livez", 200}} {
		if got := status(http.MethodGet, c.url, ""); got != c.want {
			t.Errorf("GET %s while draining: %d, want %d", c.url, got, c.want)
		}
	}
	// A new connection is still served: a listener and a publisher.
	after := ssetest.Subscribe(t, &http.Client{}, base+"/events", nil)
	const event = `{"during":"drain"}`
	if got := status(http.MethodPost, base+"/api/events", event); got != http.StatusNoContent {
		t.Fatalf("POST while draining: %d, want 204", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range []*ssetest.Stream{before, after} {
		if got := s.NextData(t, ctx); got != event {
			t.Errorf("listener got %q while draining, want %s", got, event)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil { // no need to wait out the minute
		t.Fatal(err)
	}
	p.exit(t, 20*time.Second)
}

// Seconds print rounded, as people read them: /health's uptime_seconds and
// the logs' duration_s to the millisecond, took_s to the microsecond, never
// a float64 sum such as 12.725999999999999. Many samples, each above a
// second (below, the sum is exact): an unrounded figure prints short only
// now and then.
func TestSecondsPrintRounded(t *testing.T) {
	p := startProcess(t, nil, "PORT=0")
	_, base := p.listening(t)
	var streams []io.Closer
	for range 10 { // a duration_s each, once closed
		resp, err := http.Get(base + "/events")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = resp.Body.Read(make([]byte, 64))
		streams = append(streams, resp.Body)
	}
	time.Sleep(1100 * time.Millisecond)
	for _, s := range streams {
		s.Close()
		time.Sleep(3 * time.Millisecond)
	}
	ms := regexp.MustCompile(`^\d+(\.\d{1,3})?$`)
	for range 20 {
		resp, err := http.Get(base + "/health")
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]json.RawMessage
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"uptime_seconds", "fanout_lag_seconds"} {
			if v := string(h[f]); !ms.MatchString(v) {
				t.Errorf("/health %s %s, want whole milliseconds", f, v)
			}
		}
		time.Sleep(7 * time.Millisecond)
	}
	ssetest.Eventually(t, 30*time.Second, "10 streams logged as ended", func() (bool, string) {
		return len(p.stdout.records("listener disconnected")) == 10, ""
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 30*time.Second, "nothing")
	us := regexp.MustCompile(`^\d+(\.\d{1,6})?$`)
	for _, c := range []struct {
		msg, field string
		re         *regexp.Regexp
	}{{"listener disconnected", "duration_s", ms}, {"stopped", "took_s", us}} {
		for _, line := range strings.Split(p.stdout.String(), "\n") {
			if !strings.Contains(line, `"message":"`+c.msg+`"`) {
				continue
			}
			var rec map[string]json.RawMessage
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			if v := string(rec[c.field]); !c.re.MatchString(v) {
				t.Errorf("%q: %s %s, not rounded", c.msg, c.field, v)
			}
		}
	}
}
