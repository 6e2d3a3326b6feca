// Package publish is the one path every way in ends in. A door (a POST, a
// CloudEvent, a gRPC call, an upstream feed) only translates its input into
// one JSON object; [Door.Publish] validates and compacts it (pkg/event),
// hands it to the local hub and, once the hub took it, to every sink (the
// link to other replicas, Kinesis, …). A rule added here holds for every
// door; a door maps the errors below to its own protocol.
package publish

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/event"
)

// Errors from [Door.Publish]. An invalid event's message is safe to show
// to its sender: it never quotes the event.
var (
	ErrInvalid = errors.New("invalid event")
	ErrBusy    = broadcast.ErrBusy   // the fan-out is saturated: retry shortly
	ErrClosed  = broadcast.ErrClosed // the service is shutting down
)

// Hub takes accepted events for the local listeners: a *broadcast.Hub.
type Hub interface {
	Publish(data []byte) error
}

// Sink is a way out besides the local listeners. Put must never block and
// must copy data if it keeps it: a sink that cannot keep up drops and
// counts, it never slows a door down.
type Sink interface {
	Put(data []byte)
}

// SinkFunc adapts a function to [Sink].
type SinkFunc func(data []byte)

// Put calls f(data).
func (f SinkFunc) Put(data []byte) { f(data) }

// Options configure a [Path].
type Options struct {
	Hub           Hub
	Sinks         []Sink // each accepted event goes to every one, in order, after the hub
	Lenient       bool   // accept any JSON object of RFC 8259, not only I-JSON (STRICT_JSON=false)
	ClientIPField string // when set, every event gets "field":"<client ip>" as its last member
}

// Path validates events and hands them on. Create it with [New], then one
// [Door] per way in.
type Path struct {
	hub     Hub
	sinks   []Sink
	compact func(dst, body []byte, ipField, ip string) ([]byte, error)
	ipField string

	mu    sync.Mutex
	doors []*Door
}

// New returns the publish path.
func New(opts Options) *Path {
	p := &Path{hub: opts.Hub, sinks: opts.Sinks, compact: event.Compact, ipField: opts.ClientIPField}
	if opts.Lenient {
		p.compact = event.CompactLenient
	}
	return p
}

// WantsClientIP reports whether events carry the sender's address, so a
// door resolves it only when it is used.
func (p *Path) WantsClientIP() bool { return p.ipField != "" }

// WantsClientIP reports whether events through d carry the sender's
// address (see [Path.WantsClientIP]).
func (d *Door) WantsClientIP() bool { return d.path.WantsClientIP() }

// Door returns the entry for one way in, counted under name (a metrics
// label: "post", "cloudevents", "grpc", "upstream"). Asking twice for the
// same name returns the same door.
func (p *Path) Door(name string) *Door {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.doors {
		if d.name == name {
			return d
		}
	}
	d := &Door{name: name, path: p}
	p.doors = append(p.doors, d)
	return d
}

// Door is one way in. Its methods are safe for concurrent use.
type Door struct {
	name string
	path *Path
	acc  atomic.Uint64
	inv  atomic.Uint64
	busy atomic.Uint64
	// keepIP: the door relays events another server accepted; see KeepClientIP.
	keepIP atomic.Bool
}

// KeepClientIP makes d pass events on with the CLIENT_IP_FIELD member they
// came with instead of this hop's peer address: for a door that relays
// what a trusted server already accepted (an upstream feed, where the
// field, set by the first dispatcher, names the original sender). It
// returns d.
func (d *Door) KeepClientIP() *Door {
	d.keepIP.Store(true)
	return d
}

// Publish validates body as one JSON object, applies the client IP field,
// and hands the compact event to the hub, then to every sink. The compact
// form is appended to dst, which the caller may reuse once Publish
// returns; the result is that slice. Errors: [ErrInvalid] (with the
// reason, see pkg/event), [ErrBusy], [ErrClosed].
func (d *Door) Publish(dst, body []byte, ip string) ([]byte, error) {
	data, err := d.Prepare(dst, body, ip, nil)
	if err != nil {
		return data, err
	}
	return data, d.Send(data)
}

// Prepare is the first half of [Door.Publish]: it validates and compacts
// body and applies the client IP field, then, when check is not nil,
// applies the door's own rules to the compact event (a CloudEvent's
// attributes); an error from check is [ErrInvalid] with check's text. It
// publishes nothing, so a door can prepare a whole batch before sending any
// of it with [Door.Send].
func (d *Door) Prepare(dst, body []byte, ip string, check func(event []byte) error) ([]byte, error) {
	p := d.path
	ipField := p.ipField
	if d.keepIP.Load() {
		ipField = ""
	}
	data, err := p.compact(dst, body, ipField, ip)
	if err == nil && check != nil {
		if err = check(data[len(dst):]); err != nil {
			data = dst
		}
	}
	if err != nil {
		d.inv.Add(1)
		return data, invalidError{err}
	}
	return data, nil
}

// Send is the second half of [Door.Publish]: it hands an event that
// [Door.Prepare] returned to the hub, then to every sink. Errors:
// [ErrBusy], [ErrClosed].
func (d *Door) Send(data []byte) error {
	if err := d.path.hub.Publish(data); err != nil {
		d.busy.Add(1)
		return err
	}
	d.acc.Add(1)
	for _, s := range d.path.sinks {
		s.Put(data)
	}
	return nil
}

// SendAll sends events (each from [Door.Prepare]) in order, as [Door.Send]
// does, and returns how many went out. While the hub is saturated it waits
// for the fan-out to make room, up to patience in all or until ctx ends,
// so that a batch larger than the publish queue goes through when the
// fan-out keeps up; then it gives up with [ErrBusy]. [ErrClosed] ends it
// at once.
func (d *Door) SendAll(ctx context.Context, events [][]byte, patience time.Duration) (int, error) {
	var deadline time.Time
	for i, data := range events {
		for {
			err := d.path.hub.Publish(data)
			if err == nil {
				break
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(patience)
			}
			if !errors.Is(err, ErrBusy) || time.Now().After(deadline) || ctx.Err() != nil {
				d.busy.Add(1)
				return i, err
			}
			time.Sleep(time.Millisecond) // the fan-out hands events on in batches: let one go
		}
		d.acc.Add(1)
		for _, s := range d.path.sinks {
			s.Put(data)
		}
	}
	return len(events), nil
}

// DoorStats are one door's counters since start.
type DoorStats struct {
	Name     string `json:"name"`
	Accepted uint64 `json:"accepted"` // handed to the hub and the sinks
	Invalid  uint64 `json:"invalid"`  // refused by validation
	Busy     uint64 `json:"busy"`     // refused by the hub: saturated or shutting down
}

// Stats returns every door's counters, in the order the doors were made.
func (p *Path) Stats() []DoorStats {
	p.mu.Lock()
	doors := append([]*Door(nil), p.doors...)
	p.mu.Unlock()
	out := make([]DoorStats, len(doors))
	for i, d := range doors {
		out[i] = DoorStats{Name: d.name, Accepted: d.acc.Load(), Invalid: d.inv.Load(), Busy: d.busy.Load()}
	}
	return out
}

// invalidError is an event refused by validation: it is [ErrInvalid] and
// the reason from pkg/event, and its text is the reason alone.
type invalidError struct{ reason error }

func (e invalidError) Error() string   { return e.reason.Error() }
func (e invalidError) Unwrap() []error { return []error{ErrInvalid, e.reason} }
