package grpcapi

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/tap"
)

// messageDeadline ends a call whose first request message has not fully
// arrived within d of its HEADERS: gRPC's BODY_READ_TIMEOUT. Without it a
// client announcing a message and trickling it holds the call, its stream
// and its connection (counted busy, not idle) forever.
//
// The deadline is set where grpc-go lets it govern the transport's read of
// the message: the context a tap handle returns becomes the stream's own,
// which the read waits on (the context a stats handler's TagRPC returns
// does not: the stream's reader is built before it). That context lasts
// the whole call, so it cannot be a plain deadline (a Subscribe outlives
// it): a timer cancels it, stopped by the stats handler once the first
// message is in (InPayload) or the call has ended. A call cut this way
// ends with DeadlineExceeded and frees its stream; its connection goes
// back to idle when it was its last call.
type messageDeadline struct {
	d time.Duration
	// expired is told the method of each call cut.
	expired func(method string)
}

// firstMessage is one call's context until its first message is in.
type firstMessage struct {
	context.Context // cancelled by timer
	timer           *time.Timer
	cut             atomic.Bool // the timer fired: Err says DeadlineExceeded
}

type firstMessageKey struct{}

func (c *firstMessage) Err() error {
	if err := c.Context.Err(); err != nil && c.cut.Load() {
		return context.DeadlineExceeded
	}
	return c.Context.Err()
}

func (c *firstMessage) Value(key any) any {
	if key == (firstMessageKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// tap is a tap.ServerInHandle: it runs on the connection's reader as each
// call's HEADERS arrive, so it only starts a timer.
func (m *messageDeadline) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	ctx, cancel := context.WithCancel(ctx)
	fm := &firstMessage{Context: ctx}
	method := info.FullMethodName
	fm.timer = time.AfterFunc(m.d, func() {
		fm.cut.Store(true)
		cancel()
		m.expired(method)
	})
	return fm, nil
}

// stop is the stats handler's part: the first message is in, or the call
// is over.
func (m *messageDeadline) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return ctx
}

func (m *messageDeadline) HandleRPC(ctx context.Context, st stats.RPCStats) {
	switch st.(type) {
	case *stats.InPayload, *stats.End:
		if fm, _ := ctx.Value(firstMessageKey{}).(*firstMessage); fm != nil {
			fm.timer.Stop()
		}
	}
}

func (m *messageDeadline) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (m *messageDeadline) HandleConn(context.Context, stats.ConnStats) {}
