package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// ADMIN_HOST binds the admin port to one address only, and the admin
// server's write timeout still lets a profile be written.
func TestAdminHostBindsOneAddress(t *testing.T) {
	p := startProcess(t, nil, "ADMIN_HOST=127.0.0.2")
	rec, _ := p.listening(t)
	addr, _ := rec["admin_addr"].(string)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.2" {
		t.Fatalf("admin_addr %q, want on 127.0.0.2", addr)
	}
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port)); err == nil {
		c.Close()
		t.Fatal("the admin port answers on 127.0.0.1 too")
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/profile?seconds=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || len(body) == 0 || strings.Contains(string(body), "error") {
		t.Fatalf("profile: %d, %d bytes, %v", resp.StatusCode, len(body), err)
	}
}

// ADMIN_HOST=0.0.0.0 means every IPv4 interface, not IPv6 as well.
func TestAdminHostIPv4AnyStaysIPv4(t *testing.T) {
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here (%v): nothing to tell apart", err)
	} else {
		ln.Close()
	}
	p := startProcess(t, nil, "ADMIN_HOST=0.0.0.0")
	rec, _ := p.listening(t)
	_, port, err := net.SplitHostPort(fmt.Sprint(rec["admin_addr"]))
	if err != nil {
		t.Fatalf("admin_addr %v: %v", rec["admin_addr"], err)
	}
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("the admin port does not answer on 127.0.0.1: %v", err)
	}
	c.Close()
	if c, err := net.Dial("tcp", net.JoinHostPort("::1", port)); err == nil {
		c.Close()
		t.Fatal("ADMIN_HOST=0.0.0.0: the admin port answers on ::1 too")
	}
}
