package main

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Connections accepted on the public port carry TCP_USER_TIMEOUT, so a
// listener that vanished without closing its connection is given up after
// WRITE_TIMEOUT of unacknowledged data, not after minutes of retransmits.
func TestAcceptedConnectionsGiveUpOnUnacknowledgedData(t *testing.T) {
	ln, err := listen(t.Context(), "127.0.0.1:0", 1234*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got, keepAlive int
	var gerr, kerr error
	if err := raw.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
		keepAlive, kerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
	}); err != nil || gerr != nil || kerr != nil {
		t.Fatal(err, gerr, kerr)
	}
	if got != 1234 {
		t.Fatalf("TCP_USER_TIMEOUT of an accepted connection = %d ms, want 1234", got)
	}
	// Probes would duplicate the heartbeats and timeouts, at four system
	// calls per accepted connection.
	if keepAlive != 0 {
		t.Fatalf("SO_KEEPALIVE of an accepted connection = %d, want 0", keepAlive)
	}
}
