package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// GET /events declaring a body it never sends once held a listener slot
// until SHUTDOWN_TIMEOUT: with MAX_SUBSCRIBERS of them, no real listener got
// in and SIGTERM always ended in "graceful shutdown incomplete". None of
// these clients reads its answer.
func TestStreamRequestsWithABodyHoldNeitherSlotsNorShutdown(t *testing.T) {
	const slots = 6
	p := startProcess(t, nil, "PORT=0", "MAX_SUBSCRIBERS=6", "SHUTDOWN_TIMEOUT=20s")
	_, base := p.listening(t)
	addr := strings.TrimPrefix(base, "http://")
	for i := range slots {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "GET /events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n"
		if i%2 == 1 {
			req = "GET /event-dispatcher HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n"
		}
		if _, err := io.WriteString(conn, req); err != nil {
			t.Fatal(err)
		}
	}
	// One more, read: it is refused at once.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a guard against a hang only
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}

	client := &http.Client{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := ssetest.Open(ctx, client, base+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Resp.StatusCode != http.StatusOK {
		t.Fatalf("a real listener got status %d with %d body-declaring requests open", s.Resp.StatusCode, slots+1)
	}
	if code, err := post(ctx, client, base, 1); err != nil || code != http.StatusNoContent {
		t.Fatalf("publishing: %v, status %d", err, code)
	}
	for {
		e, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Data) > 0 {
			if e.Data[0] != wantData(t, 1) {
				t.Errorf("listener got %q", e.Data[0])
			}
			break
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 60*time.Second, "a body-declaring GET")
}

// A POST whose body trickles in (within BODY_READ_TIMEOUT) once held the
// shutdown until SHUTDOWN_TIMEOUT, which then ended every stream without a
// clean end. It now gets a short grace and is cut.
func TestTrickledPostHoldsNoShutdown(t *testing.T) {
	p := startProcess(t, nil, "PORT=0", "SHUTDOWN_TIMEOUT=5s", "WRITE_TIMEOUT=2s", "BODY_READ_TIMEOUT=1m")
	_, base := p.listening(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := ssetest.Open(ctx, &http.Client{}, base+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 100-continue: its answer shows the handler is reading the body.
	head := "POST /api/events HTTP/1.1\r\nHost: d\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second)) // a guard against a hang only
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q, %v", line, err)
	}
	trickling := make(chan struct{})
	go func() {
		defer close(trickling)
		for range 3000 {
			if _, err := io.WriteString(conn, " "); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for {
		e, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("stream ended without its end comment: %v", err)
		}
		if reason, ok := e.EndReason(); ok {
			if reason != "server shutting down" {
				t.Errorf("end reason %q", reason)
			}
			break
		}
	}
	p.exitedCleanly(t, 60*time.Second, "a trickling POST")
	_ = conn.Close()
	<-trickling
}
