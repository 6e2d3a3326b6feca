package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// natsSession is one NATS core connection, publishing and subscribed to the
// subject. The client's own reconnection is off: the Broker's loop owns
// reconnecting, with the same backoff and probe as for Redis, and the
// client's reconnect buffer would keep events for later.
type natsSession struct {
	*ending
	nc      *nats.Conn
	subject string

	// Messages the client dropped at its pending limit, added to dropped
	// as the subscription's cumulative count grows.
	dropped    *atomic.Uint64
	dropMu     sync.Mutex
	dropsTaken int
}

// Pending limits of the subscription inside the client: the hub takes each
// message without blocking, so these are reached only by a starved process.
const (
	natsPendingMsgs  = 65536
	natsPendingBytes = 64 << 20
)

func dialNATS(servers, subject string, timeout time.Duration, name string, dropped *atomic.Uint64, log zerolog.Logger) dialFunc {
	return func(ctx context.Context, deliver func([]byte)) (session, error) {
		s := &natsSession{ending: newEnding(), subject: subject, dropped: dropped}
		nc, err := nats.Connect(servers,
			nats.Name(name),
			nats.NoReconnect(),
			nats.Timeout(timeout),
			// A write to a frozen server fails after this long (1 min by
			// default) instead of holding the sending loop and its probe.
			nats.FlusherTimeout(timeout),
			nats.NoCallbacksAfterClientClose(),
			nats.ClosedHandler(func(*nats.Conn) { s.end(errors.New("connection closed")) }),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err == nil { // the server closed the connection without saying why
					err = errors.New("connection closed by the server")
				}
				s.end(fmt.Errorf("disconnected: %w", err))
			}),
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				if sub != nil {
					s.countDrops(sub) // a slow consumer: the first drop, at least
				}
				ev := log.Warn()
				if connectionError(err) {
					ev = log.Debug() // the connection is going: its loss is the outage's one warning
				}
				ev.Err(err).Msg("NATS reports an error: events from other replicas may have been missed")
			}),
		)
		if err != nil {
			return nil, err
		}
		s.nc = nc
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			// Messages after a drop are still pending, so the next one
			// delivered counts it.
			s.countDrops(m.Sub)
			deliver(m.Data)
		})
		if err == nil {
			err = sub.SetPendingLimits(natsPendingMsgs, natsPendingBytes)
		}
		if err == nil {
			// The server has the subscription once it answers a PING sent after it.
			err = nc.FlushWithContext(ctx)
		}
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe: %w", err)
		}
		return s, nil
	}
}

// publish queues msgs in the client's buffer, flushed by its own goroutine
// in order; a broken connection surfaces as an error here or as lost.
func (s *natsSession) publish(_ context.Context, msgs [][]byte) error {
	for _, m := range msgs {
		if err := s.nc.Publish(s.subject, m); err != nil {
			s.end(fmt.Errorf("publish: %w", err))
			return err
		}
	}
	return nil
}

// countDrops adds to the Broker's counter the messages the client dropped
// at its pending limit since the last call. The client only logs them
// (ErrorHandler, once per slow spell): its count is the only record.
func (s *natsSession) countDrops(sub *nats.Subscription) {
	n, err := sub.Dropped()
	if err != nil { // closed: the count is gone with it
		return
	}
	s.dropMu.Lock()
	defer s.dropMu.Unlock()
	if n > s.dropsTaken {
		s.dropped.Add(uint64(n - s.dropsTaken))
		s.dropsTaken = n
	}
}

// connectionError reports whether err is the connection itself failing
// (reset, closed), which the disconnect that follows reports, rather than
// something the server or client refused (permissions, a slow consumer).
func connectionError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// maxPayload is the server's max_payload (1 MB by default).
func (s *natsSession) maxPayload() int64 { return s.nc.MaxPayload() }

func (s *natsSession) close() {
	s.end(nil)
	if s.nc.IsConnected() { // at shutdown: what publish buffered goes out first
		_ = s.nc.FlushTimeout(time.Second)
	}
	s.nc.Close()
}
