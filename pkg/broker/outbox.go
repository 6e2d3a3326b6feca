package broker

import "sync"

// outbox holds the events waiting to be sent, bounded in count and bytes:
// when the broker cannot keep up, new events are refused rather than kept.
// One goroutine takes everything queued at once and sends it in one round
// trip, which keeps the order and amortises the round trip under load.
type outbox struct {
	mu          sync.Mutex
	msgs, spare [][]byte
	bytes       int
	maxMsgs     int
	maxBytes    int
	wake        chan struct{} // one pending signal at most
}

func newOutbox(maxMsgs, maxBytes int) outbox {
	return outbox{maxMsgs: maxMsgs, maxBytes: maxBytes, wake: make(chan struct{}, 1)}
}

// push queues msg, or reports false when the outbox is full.
func (o *outbox) push(msg []byte) bool {
	o.mu.Lock()
	if len(o.msgs) >= o.maxMsgs || o.bytes+len(msg) > o.maxBytes {
		o.mu.Unlock()
		return false
	}
	o.msgs = append(o.msgs, msg)
	o.bytes += len(msg)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued; hand the slice back with recycle.
func (o *outbox) take() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	msgs := o.msgs
	o.msgs, o.spare, o.bytes = o.spare, nil, 0
	return msgs
}

func (o *outbox) recycle(msgs [][]byte) {
	clear(msgs) // let the events go
	o.mu.Lock()
	if o.spare == nil {
		o.spare = msgs[:0]
	}
	o.mu.Unlock()
}

// clear drops everything queued and says how much.
func (o *outbox) clear() int {
	msgs := o.take()
	o.recycle(msgs)
	return len(msgs)
}
