package main

import (
	"context"
	"net"
	"time"
)

// listen opens the public port. Every connection accepted on it gives up
// once data it was sent has gone unacknowledged for userTimeout (where the
// system supports it): a listener whose machine or network vanished without
// a FIN or RST would otherwise keep its stream, its slot and its per-IP
// count for the ~15 minutes of TCP retransmissions, because the heartbeats
// keep fitting in the socket buffer and no write ever blocks long enough
// for WRITE_TIMEOUT.
//
// TCP keep-alive probes stay off: they would find nothing those do not
// (streams carry heartbeats, an idle connection is closed after 120 s, a
// request's header and body have their read timeouts), and turning them on costs four system calls per
// accepted connection, which a reconnect storm of thousands pays at once.
func listen(ctx context.Context, addr string, userTimeout time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{Control: userTimeoutControl(userTimeout), KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}
