package connlimit_test

import (
	"net"
	"testing"

	"event-dispatcher/pkg/connlimit"
)

// BenchmarkRequestTransitions is the cost the caps add to each request of
// a kept-alive connection: one Busy as it starts, one Idle as it ends, with
// 256 connections from 8 addresses held.
func BenchmarkRequestTransitions(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	l := connlimit.New(ln, connlimit.Options{Max: 1000, MaxPerClient: 1000})
	defer l.Close()
	accepted := make(chan net.Conn, 256)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	conns := make([]net.Conn, 0, 256)
	for i := range 256 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%8))}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, <-accepted)
	}
	b.ResetTimer()
	for i := range b.N {
		c := conns[i%len(conns)]
		l.Busy(c)
		l.Idle(c)
	}
}
