package connlimit

import (
	"context"
	"sync"
)

// AdmitStream is [MarkStream] for a request whose connection may carry
// others at once (multiplexed: HTTP/2). Each stream a connection carries
// beyond its first counts against its address's MaxPerClient as one more
// connection, until it ends: an address holds as many streams on a few
// HTTP/2 connections as it could on as many HTTP/1.1 ones, no more. At its
// cap the address gives up its own longest-idle connection for the
// stream, as it would for a new connection; with none idle, ok is false
// and the stream must be refused (release is then a no-op). Peers exempt
// from the per-address cap, requests that are not multiplexed and a
// connection's first stream are only marked. Without a recorded
// connection it does nothing and returns ok.
func AdmitStream(ctx context.Context, multiplexed bool) (release func(), ok bool) {
	ac, _ := ctx.Value(connKey{}).(*conn)
	if ac == nil {
		return func() {}, true
	}
	return ac.l.admitStream(ac, multiplexed)
}

func (l *Listener) admitStream(ac *conn, multiplexed bool) (release func(), ok bool) {
	var victim *conn
	l.mu.Lock()
	if multiplexed && ac.held && !ac.exempt && ac.streams > 0 && l.opts.MaxPerClient > 0 {
		cl := l.clients[ac.key]
		if cl.open >= l.opts.MaxPerClient {
			if cl.idle.Len() == 0 {
				l.mu.Unlock()
				l.streamsRefused.Add(1)
				return func() {}, false
			}
			// ac carries a stream, so it is not idle: the victim is
			// another of cl's, and cl keeps at least ac.
			victim = cl.idle.Front().Value.(*conn)
			l.releaseLocked(victim)
		}
		l.count(cl, 0, 0, 1)
		ac.extra++
	}
	// Marked under the same lock as counted, so that two streams starting
	// at once on one connection are not both taken for its first.
	l.markStream(ac)
	l.mu.Unlock()
	if victim != nil {
		_ = victim.Conn.Close()
		l.closedIdle[PerClient].Add(1)
		l.warn(ac.name)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.endStream(ac)
			l.uncountExtra(ac)
		})
	}, true
}

// uncountExtra gives back the extra streams ac no longer carries: it
// counts as many as it carries beyond its first, whichever ended.
func (l *Listener) uncountExtra(ac *conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ac.held {
		return // released with the connection
	}
	cl := l.clients[ac.key]
	for ac.extra > 0 && ac.extra > ac.streams-1 {
		ac.extra--
		l.count(cl, 0, 0, -1)
	}
}
