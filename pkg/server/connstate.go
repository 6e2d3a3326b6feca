package server

import (
	"net"
	"net/http"

	"event-dispatcher/pkg/connlimit"
)

// TrackConns returns an http.Server.ConnState hook that tells lim which of
// its connections may be closed to make room: those waiting for a first
// request (or a TLS handshake) and those kept alive between requests. A
// connection serving a request or a stream, or hijacked, is never closed
// for room; a closed one is released by its own Close.
func TrackConns(lim *connlimit.Listener) func(net.Conn, http.ConnState) {
	return func(c net.Conn, state http.ConnState) {
		switch state {
		case http.StateNew, http.StateIdle:
			lim.Idle(c)
		case http.StateActive, http.StateHijacked:
			lim.Busy(c)
		}
	}
}
