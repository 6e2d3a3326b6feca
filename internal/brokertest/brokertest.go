// Package brokertest runs real brokers for tests: a redis-server or a
// nats-server process of its own on a free loopback port, which a test can
// kill, restart on the same port, pause and resume.
//
// When the server's binary is missing, the test fails under CI=true (.ci/run
// installs the Debian packages redis-server and nats-server) and is skipped
// otherwise, saying so.
package brokertest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/testenv"
)

// Server is one broker process. Its methods are for the test's goroutine.
type Server struct {
	t       testing.TB
	kind    string // "redis" or "nats"
	bin     string
	args    []string
	Port    int
	URL     string // redis://127.0.0.1:port or nats://127.0.0.1:port
	cmd     *exec.Cmd
	exited  chan struct{}
	paused  bool
	output  Log // the server's own log, shown when the test fails
	started bool
}

// Redis starts redis-server with no persistence; extra are more
// redis-server arguments, e.g. "--client-output-buffer-limit", "pubsub 64kb 32kb 0".
func Redis(t testing.TB, extra ...string) *Server {
	s := &Server{t: t, kind: "redis", bin: find(t, "redis-server", "redis-server")}
	s.Port = FreePort(t)
	s.URL = fmt.Sprintf("redis://127.0.0.1:%d", s.Port)
	s.args = append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning", "--dir", t.TempDir()}, extra...)
	s.Start()
	return s
}

// NATS starts nats-server; config, when not empty, is the content of its
// configuration file (e.g. "max_payload: 4096").
func NATS(t testing.TB, config string) *Server {
	s := &Server{t: t, kind: "nats", bin: find(t, "nats-server", "nats-server")}
	s.Port = FreePort(t)
	s.URL = fmt.Sprintf("nats://127.0.0.1:%d", s.Port)
	s.args = []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
	if config != "" {
		f := filepath.Join(t.TempDir(), "nats.conf")
		if err := os.WriteFile(f, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		s.args = append(s.args, "-c", f)
	}
	s.Start()
	return s
}

func find(t testing.TB, name, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"} {
		if p := filepath.Join(dir, name); isExec(p) {
			return p
		}
	}
	testenv.Missing(t, fmt.Sprintf("no %s on this machine (apt-get install %s, or run .ci/run)", name, pkg))
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&0o111 != 0
}

// FreePort is a loopback port free at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start runs the server (again, on the same port) and waits until it
// answers. The test's cleanup kills it.
func (s *Server) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatalf("%s already running", s.kind)
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Stdout, cmd.Stderr = &s.output, &s.output
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", s.kind, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	if !s.started {
		s.started = true
		s.t.Cleanup(func() {
			if s.t.Failed() {
				s.t.Logf("%s output:\n%s", s.kind, s.output.String())
			}
		})
	}
	exited := s.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	s.t.Cleanup(func() {
		if s.cmd == cmd {
			s.Kill()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !s.answers() {
		select {
		case <-exited:
			s.t.Fatalf("%s %s exited at start:\n%s", s.bin, strings.Join(s.args, " "), s.output.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s not answering on port %d after 10 s", s.kind, s.Port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether the server speaks its protocol on the port.
func (s *Server) answers() bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	want := "INFO "
	if s.kind == "redis" {
		want = "+PONG"
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return false
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, want)
}

// Kill stops the server at once (SIGKILL), as a crash would, and waits for
// it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.cmd, s.paused = nil, false
}

// Pause freezes the server (SIGSTOP): its connections stay open, nothing
// is answered.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
	s.paused = true
}

// Resume undoes Pause (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
	s.paused = false
}

// Log is an io.Writer safe for concurrent writers that keeps everything.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is the number of times substr was written.
func (l *Log) Count(substr string) int { return strings.Count(l.String(), substr) }
