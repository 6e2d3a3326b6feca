// Package broker links replicas of the dispatcher through a pub/sub broker,
// Redis/Valkey or NATS core, so that an event accepted by any replica
// reaches the listeners of every replica.
//
// The replica that accepts an event delivers it to its own hub and hands it
// to [Broker.Publish]. Every replica, the sender included, receives it back
// from the broker: the sender recognises its own origin id in the message's
// envelope and skips it (its listeners already have it), the others pass
// the event to their hub through [Options].Handler. The event's bytes are
// never re-encoded on the way.
//
// The broker is never on the path of local delivery. While it is away,
// events are not queued for later: they are counted as dropped (logged once
// per outage), and the link reconnects by itself with capped, jittered
// backoff. A probe sent every second through the broker to this replica
// itself finds a subscription that is connected but silent, and repairs it
// by reconnecting.
package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/pkg/event"
)

// State of the link to the broker.
type State int32

// States reported by [Broker.Stats]; "none" is for callers without a broker.
const (
	Connecting State = iota // starting, or lost and trying again for the first time
	Connected               // subscribed, events flow both ways
	Down                    // the last attempt to connect failed; retrying
)

func (s State) String() string {
	switch s {
	case Connected:
		return "connected"
	case Down:
		return "down"
	}
	return "connecting"
}

// Options configure a [Broker]. URL, Channel and Handler are required; zero
// durations and sizes take the defaults documented on each field.
type Options struct {
	URL     string // redis://, rediss:// or nats:// (see [Validate])
	Channel string // Redis channel or NATS subject shared by the replicas
	// Handler receives each event published by another replica, one at a
	// time and in the order the broker delivers them. It must not block; an
	// error counts the event as not delivered locally.
	Handler func(data []byte) error
	Logger  zerolog.Logger
	// LenientJSON accepts from other replicas any JSON object, as ingest
	// does with STRICT_JSON=false; by default events must pass the same
	// I-JSON and UTF-8 checks as ingest (event.Check).
	LenientJSON bool
	// MaxEventBytes is the largest event the caller publishes, compared on
	// each connection with the broker's own limit when the broker tells it.
	MaxEventBytes int64

	ProbeInterval time.Duration // period of the self-probe; default 1s
	ProbeTimeout  time.Duration // a probe unanswered this long means the subscription is silent; default 4s
	DialTimeout   time.Duration // connecting, subscribing and each publish; default 3s
	MaxBackoff    time.Duration // cap of the delay between attempts to connect; default 2s
	OutboxBytes   int           // events waiting to be sent, in bytes; default 8 MiB (at least two events of MaxEventBytes)
}

// outboxMessages bounds the number of events waiting to be sent, whatever
// their size.
const outboxMessages = 4096

// Stats are the link's counters since start, for /health and metrics.
type Stats struct {
	State         State  `json:"-"`
	Sent          uint64 `json:"broker_sent"`           // events published to the broker
	Received      uint64 `json:"broker_received"`       // events received from other replicas
	PublishErrors uint64 `json:"broker_publish_errors"` // events not sent although connected: publish failed, or sending fell behind
	DroppedDown   uint64 `json:"broker_dropped_down"`   // events not sent because the broker was unreachable
	DroppedBusy   uint64 `json:"broker_dropped_busy"`   // events received but refused by the local hub (Handler error)
	DroppedClient uint64 `json:"broker_dropped_client"` // messages the NATS client dropped before this replica read them (its pending limit)
	TooLarge      uint64 `json:"broker_too_large"`      // events over the broker's size limit, delivered locally only
	Reconnects    uint64 `json:"broker_reconnects"`     // connections established after a loss
	SilentRepairs uint64 `json:"broker_silent_repairs"` // connections the probe found silent or frozen, replaced
	Foreign       uint64 `json:"broker_foreign"`        // messages on the channel not written by this service, or not a JSON object within MaxEventBytes
	Invalid       uint64 `json:"broker_invalid"`        // of Foreign, those in this service's envelope whose event ingest would refuse (event.Check, MaxEventBytes, a line break)
}

// session is one connection to a broker: redis.go and nats.go implement
// it. A session delivers every message it receives to the deliver function
// given to its dialFunc, from a single goroutine, until it is closed.
type session interface {
	publish(ctx context.Context, msgs [][]byte) error // in order; an error ends the session
	lost() <-chan struct{}                            // closed when the connection is gone
	cause() error                                     // why, once lost is closed
	maxPayload() int64                                // the broker's message limit, 0 if unknown
	close()                                           // ends the session and waits for its goroutines
}

type dialFunc func(ctx context.Context, deliver func(msg []byte)) (session, error)

var errSilent = errors.New("subscription silent: the probe did not come back")

// Broker is the link of this replica to the others. Create it with [New]
// and stop it with [Broker.Close].
type Broker struct {
	opts   Options
	log    zerolog.Logger
	origin origin
	dial   dialFunc

	state      atomic.Int32
	maxPayload atomic.Int64 // of the current session, 0 if unknown
	out        outbox
	probeSeen  atomic.Uint64 // highest own probe received
	probeSent  atomic.Uint64 // number of the last probe sent; only run stores

	sent, received, publishErrors, droppedDown, droppedBusy atomic.Uint64
	droppedClient                                           atomic.Uint64
	tooLarge, reconnects, silent, notOurs, invalid          atomic.Uint64
	outageLogged, foreignLogged                             atomic.Bool

	quit     chan struct{} // closed by Close: send what is queued, then stop
	quitOnce sync.Once
	abort    context.CancelFunc // stop now, dropping what is queued
	ctx      context.Context
	done     chan struct{}
}

// New validates opts and starts linking in the background: it returns at
// once, whether the broker is reachable or not.
func New(opts Options) (*Broker, error) {
	kind, err := Validate(opts.URL, opts.Channel)
	if err != nil {
		return nil, err
	}
	if opts.Handler == nil {
		return nil, errors.New("broker: Options.Handler is required")
	}
	setDefault(&opts.ProbeInterval, time.Second)
	setDefault(&opts.ProbeTimeout, 4*time.Second)
	setDefault(&opts.DialTimeout, 3*time.Second)
	setDefault(&opts.MaxBackoff, 2*time.Second)
	setDefault(&opts.OutboxBytes, 8<<20)
	opts.OutboxBytes = max(opts.OutboxBytes, 2*(int(opts.MaxEventBytes)+headerLen))

	b := &Broker{opts: opts, origin: newOrigin(), quit: make(chan struct{}), done: make(chan struct{})}
	b.log = opts.Logger.With().Str("broker", string(kind)).Str("origin", string(b.origin[:])).Logger()
	b.out = newOutbox(outboxMessages, opts.OutboxBytes)
	switch kind {
	case Redis:
		b.dial, err = dialRedis(opts.URL, opts.Channel, opts.DialTimeout)
	case NATS:
		b.dial = dialNATS(opts.URL, opts.Channel, opts.DialTimeout, "event-dispatcher "+string(b.origin[:]), &b.droppedClient, b.log)
	}
	if err != nil {
		return nil, err
	}
	b.ctx, b.abort = context.WithCancel(context.Background())
	go b.run()
	return b, nil
}

func setDefault[T time.Duration | int](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Publish hands one event (compact JSON) to the broker for the other
// replicas. It never blocks: an event that cannot be sent now is counted
// and dropped, never kept for later. data may be reused after it returns.
func (b *Broker) Publish(data []byte) {
	if State(b.state.Load()) != Connected {
		b.dropDown(1)
		return
	}
	if mp := b.maxPayload.Load(); mp > 0 && int64(headerLen+len(data)) > mp {
		b.tooLarge.Add(1)
		return
	}
	if !b.out.push(b.origin.seal(kindEvent, data)) {
		b.publishErrors.Add(1)
	}
}

// Stats returns the current state and counters.
func (b *Broker) Stats() Stats {
	return Stats{
		State:         State(b.state.Load()),
		Sent:          b.sent.Load(),
		Received:      b.received.Load(),
		PublishErrors: b.publishErrors.Load(),
		DroppedDown:   b.droppedDown.Load(),
		DroppedBusy:   b.droppedBusy.Load(),
		DroppedClient: b.droppedClient.Load(),
		TooLarge:      b.tooLarge.Load(),
		Reconnects:    b.reconnects.Load(),
		SilentRepairs: b.silent.Load(),
		Foreign:       b.notOurs.Load() + b.invalid.Load(),
		Invalid:       b.invalid.Load(),
	}
}

// Close sends what is already queued (within ctx), then disconnects. Events
// from other replicas stop arriving. Calling Close again is harmless.
func (b *Broker) Close(ctx context.Context) error {
	b.quitOnce.Do(func() { close(b.quit) })
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
		b.abort()
		<-b.done
		return ctx.Err()
	}
}

// run connects, serves the session until it is lost, and starts again
// after a capped, jittered backoff, until Close.
func (b *Broker) run() {
	defer close(b.done)
	defer b.abort()
	failures, everConnected := 0, false
	for !b.stopping() {
		dctx, cancel := context.WithTimeout(b.ctx, b.opts.DialTimeout)
		s, err := b.dial(dctx, b.receive)
		cancel()
		if err != nil {
			b.state.Store(int32(Down))
			b.outageEvent().Err(err).Msg("cannot reach the broker; retrying: " + localOnly)
			failures++
			if !b.sleep(backoff(failures, b.opts.MaxBackoff)) {
				return
			}
			continue
		}
		failures = 0
		if everConnected {
			b.reconnects.Add(1)
		}
		everConnected = true
		b.connected(s)
		err = b.serve(s)
		if err != nil { // before events are dropped, so that this is the outage's warning
			b.outageEvent().Err(err).Msg("lost the broker; reconnecting: " + localOnly)
		}
		b.state.Store(int32(Connecting))
		s.close()
		b.dropDown(b.out.clear()) // what the lost connection did not send is not sent later
		if err == nil {
			return
		}
	}
}

// localOnly says what an outage means, in the one warning it logs.
const localOnly = "events are delivered to this replica's listeners only and not sent to the others (counted in broker_dropped_down) until it is back"

// outageEvent is a warning for the first thing that notices an outage (the
// connection lost, an attempt to connect failed, an event not sent) and a
// debug line for the others: one outage, one warning. Connecting again
// ends the outage.
func (b *Broker) outageEvent() *zerolog.Event {
	if b.outageLogged.Swap(true) {
		return b.log.Debug()
	}
	return b.log.Warn()
}

func (b *Broker) connected(s session) {
	mp := s.maxPayload()
	b.maxPayload.Store(mp)
	ev := b.log.Info()
	if mp > 0 { // known: NATS tells it; Redis has no such limit within MAX_BODY_BYTES
		ev = ev.Int64("max_payload", mp)
	}
	if b.outageLogged.Swap(false) {
		ev = ev.Uint64("dropped_down_total", b.droppedDown.Load())
	}
	ev.Msg("connected to the broker")
	if mp > 0 && b.opts.MaxEventBytes+int64(headerLen) > mp {
		b.log.Warn().Int64("max_payload", mp).Int64("max_event_bytes", b.opts.MaxEventBytes).
			Msg("MAX_BODY_BYTES exceeds what the broker carries: larger events reach local listeners only (counted as broker_too_large)")
	}
	b.state.Store(int32(Connected))
}

// serve sends queued events and probes until the session is lost, the probe
// finds it silent (errSilent), or Close (nil).
func (b *Broker) serve(s session) error {
	tick := time.NewTicker(b.opts.ProbeInterval)
	defer tick.Stop()
	var probeAt time.Time
	waiting := false // for the probe sent at probeAt, on this session (one lost with the last session is forgotten)
	for {
		select {
		case <-b.quit:
			b.flush(s)
			return nil
		case <-s.lost():
			return s.cause()
		case <-b.out.wake:
			b.flush(s)
		case now := <-tick.C:
			if waiting && b.probeSeen.Load() < b.probeSent.Load() {
				if now.Sub(probeAt) >= b.opts.ProbeTimeout {
					b.silent.Add(1)
					return errSilent
				}
				continue
			}
			n := b.probeSent.Add(1)
			probeAt, waiting = now, true
			if !b.send(s, [][]byte{b.origin.seal(kindProbe, strconv.AppendUint(nil, n, 10))}, nil) {
				b.silent.Add(1) // e.g. a frozen broker: the write or its answer timed out
				return fmt.Errorf("probe: %w", s.cause())
			}
		}
	}
}

// flush sends everything queued, in order, in one round trip.
func (b *Broker) flush(s session) {
	if msgs := b.out.take(); len(msgs) > 0 {
		b.send(s, msgs, &b.sent)
		b.out.recycle(msgs)
	}
}

// send publishes msgs and adds their number to sent (events) or, on
// failure, to the publish errors; probes pass a nil sent.
func (b *Broker) send(s session, msgs [][]byte, sent *atomic.Uint64) bool {
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.DialTimeout)
	defer cancel()
	if err := s.publish(ctx, msgs); err != nil {
		if sent != nil {
			b.publishErrors.Add(uint64(len(msgs)))
		}
		return false // the session reports itself lost
	}
	if sent != nil {
		sent.Add(uint64(len(msgs)))
	}
	return true
}

// receive handles one message from the broker, on the session's goroutine.
func (b *Broker) receive(msg []byte) {
	from, kind, payload, ok := open(msg)
	switch {
	case !ok:
		b.notOurs.Add(1)
		b.ignore()
	case from == b.origin:
		if kind == kindProbe { // events from this replica were delivered locally already
			// A number not sent yet is forged (the origin is visible to
			// anyone on the channel): taking it would silence the probe.
			if n, err := strconv.ParseUint(string(payload), 10, 64); err == nil && n > b.probeSeen.Load() && n <= b.probeSent.Load() {
				b.probeSeen.Store(n) // only this goroutine stores
			}
		}
	case kind == kindEvent && !b.wellFormed(payload):
		b.invalid.Add(1) // something else wearing the envelope, or beyond this replica's limit
		b.ignore()
	case kind == kindEvent:
		b.received.Add(1)
		if err := b.opts.Handler(payload); err != nil {
			b.droppedBusy.Add(1)
		}
	}
}

// ignore logs the first message on the channel that is not an event of
// this service (counted by the caller).
func (b *Broker) ignore() {
	if !b.foreignLogged.Swap(true) {
		b.log.Warn().Str("channel", b.opts.Channel).Msg("ignoring messages on the broker channel that this service did not write (or events over MAX_BODY_BYTES); is BROKER_CHANNEL shared with something else?")
	}
}

// wellFormed reports whether payload is what a replica publishes: one JSON
// object on a single line, within MaxEventBytes, that ingest would have
// accepted (valid UTF-8; I-JSON unless LenientJSON). The hub writes it to every
// listener as is, so anything else published on the channel by whoever can
// reach the broker (a CR or LF would end the SSE data line and let the rest
// forge fields and events) must stop here.
func (b *Broker) wellFormed(payload []byte) bool {
	if b.opts.MaxEventBytes > 0 && int64(len(payload)) > b.opts.MaxEventBytes {
		return false
	}
	return !bytes.ContainsAny(payload, "\r\n") && event.Check(payload, !b.opts.LenientJSON) == nil
}

func (b *Broker) dropDown(n int) {
	if n == 0 {
		return
	}
	b.droppedDown.Add(uint64(n))
	if !b.outageLogged.Swap(true) { // not per event: nothing at all once the outage is logged
		b.log.Warn().Msg("broker unreachable: " + localOnly)
	}
}

func (b *Broker) stopping() bool {
	select {
	case <-b.quit:
		return true
	default:
		return false
	}
}

// sleep waits d, or returns false at Close.
func (b *Broker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.quit:
		return false
	}
}

// backoff is the delay before attempt number failures+1: exponential from
// 100 ms, capped, with the upper half jittered so replicas that lost the
// broker together do not return in step.
func backoff(failures int, limit time.Duration) time.Duration {
	d := min(100*time.Millisecond<<min(failures-1, 16), limit)
	return d/2 + rand.N(d/2+1)
}

// ending is the lost/cause half of a session.
type ending struct {
	once sync.Once
	ch   chan struct{}
	err  error
}

func newEnding() *ending { return &ending{ch: make(chan struct{})} }

func (e *ending) end(err error) {
	e.once.Do(func() { e.err = err; close(e.ch) })
}

func (e *ending) lost() <-chan struct{} { return e.ch }
func (e *ending) cause() error          { return e.err }

// Origin is this replica's id on the channel, as its log lines carry it
// (field "origin").
func (b *Broker) Origin() string { return string(b.origin[:]) }
