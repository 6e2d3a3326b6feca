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
func listen(ctx context.Context, addr string, userTimeout time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{Control: userTimeoutControl(userTimeout)}
	return lc.Listen(ctx, "tcp", addr)
}
