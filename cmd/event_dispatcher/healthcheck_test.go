package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/clientip"
	"event-dispatcher/pkg/server"
)

// startForHealthcheck runs the real service in-process on a free port and returns
// that port; the service is stopped, and its shutdown checked, at cleanup.
func startForHealthcheck(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-port", "0"}, io.Discard, io.Discard, ready) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	select {
	case addr := <-ready:
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		return port
	case err := <-done:
		t.Fatalf("server did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server did not start")
	}
	return ""
}

// runHealthcheck runs the binary's entry point exactly as the container health check
// does, with extra arguments after -healthcheck.
func runHealthcheck(t *testing.T, extra ...string) (stdout string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = run(ctx, append([]string{"-healthcheck"}, extra...), &out, &errOut, nil)
	return out.String(), err
}

func TestHealthcheckHealthyServerViaPortFlag(t *testing.T) {
	port := startForHealthcheck(t)
	out, err := runHealthcheck(t, "-port", port)
	if err != nil {
		t.Fatalf("healthcheck of a healthy server: %v", err)
	}
	body, ok := strings.CutPrefix(strings.TrimSpace(out), "healthy: ")
	if !ok {
		t.Fatalf("stdout %q does not start with %q", out, "healthy: ")
	}
	var h struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil || h.Status != "ok" {
		t.Fatalf("printed body %q: status %q, err %v", body, h.Status, err)
	}
}

func TestHealthcheckReadsPortFromEnvironment(t *testing.T) {
	port := startForHealthcheck(t)
	t.Setenv("PORT", port)
	if _, err := runHealthcheck(t); err != nil {
		t.Fatalf("healthcheck with PORT=%s: %v", port, err)
	}
	// -port wins over PORT, as it does for the server: a closed port fails.
	closed := healthcheckClosedPort(t)
	if _, err := runHealthcheck(t, "-port", closed); err == nil {
		t.Fatalf("-port %s (nothing listening) overridden by PORT=%s", closed, port)
	}
}

func TestHealthcheckFailsWhenNothingListens(t *testing.T) {
	port := healthcheckClosedPort(t)
	_, err := runHealthcheck(t, "-port", port)
	if err == nil {
		t.Fatal("healthcheck succeeded with nothing listening")
	}
	if !strings.Contains(err.Error(), "127.0.0.1:"+port+"/health") {
		t.Errorf("error %q does not name the probed URL", err)
	}
	// The binary, as the image's HEALTHCHECK runs it: the URL once, and why.
	cmd := exec.Command(binary, "-healthcheck", "-port", port)
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	want := "event_dispatcher: healthcheck: GET http://127.0.0.1:" + port + "/health: dial tcp 127.0.0.1:" + port + ": connect: connection refused\n"
	if err == nil || string(out) != want {
		t.Errorf("binary: %v, output %q; want exit 1 and %q", err, out, want)
	}
}

func TestHealthcheckFailsOnDrainingServer(t *testing.T) {
	hub, err := broadcast.New(broadcast.Options{QueueSize: 16, MaxListeners: 4, BufferBytes: 1 << 16, WriteTimeout: time.Second, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hub.Close(ctx)
	})
	srv := server.New(server.Options{Hub: hub, Logger: zerolog.Nop(), MaxBodyBytes: 1 << 10, BodyReadTimeout: time.Second, ClientIP: clientip.New(nil)})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	u, err := url.Parse(ts.URL)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := runHealthcheck(t, "-port", u.Port()); err != nil {
		t.Fatalf("before draining: %v", err)
	}
	srv.Drain()
	_, err = runHealthcheck(t, "-port", u.Port())
	if err == nil {
		t.Fatal("healthcheck succeeded against a draining server")
	}
	for _, want := range []string{"503", `"draining"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %s", err, want)
		}
	}
}

func TestHealthcheckRejectsPortZeroAndBadPort(t *testing.T) {
	for _, port := range []string{"0", "http"} {
		if _, err := runHealthcheck(t, "-port", port); err == nil {
			t.Errorf("-port %s: healthcheck succeeded", port)
		}
	}
}

// healthcheckClosedPort returns a loopback port that was just free; nothing listens on
// it once this returns.
func healthcheckClosedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}
