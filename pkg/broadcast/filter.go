package broadcast

import (
	"sync"

	"event-dispatcher/pkg/event"
)

// Filter keeps the events a listener asked for: those whose top-level
// field, for every Term, holds a string, number or bool whose literal
// (strings decoded, without quotes) is one of the Term's Values. A nil
// Filter keeps every event. A Filter is read-only once built.
type Filter struct {
	terms []Term
}

// Term is one field of a Filter and the values it accepts.
type Term struct {
	Field  string
	Values []string
}

// NewFilter returns a Filter requiring every term, or nil (every event)
// when there is none.
func NewFilter(terms ...Term) *Filter {
	if len(terms) == 0 {
		return nil
	}
	return &Filter{terms: terms}
}

// keeps reports whether f lets the event in fr through. The event's fields
// are read once, by the first filtered listener that looks, and shared.
func (f *Filter) keeps(fr *frame) bool {
	if f == nil {
		return true
	}
	fields := fr.fields.get(fr.json())
	for _, t := range f.terms {
		v, ok := fields.lookup(fr.json(), t.Field)
		if !ok || !contains(t.Values, v) {
			return false
		}
	}
	return true
}

func contains(values []string, v []byte) bool {
	for _, want := range values {
		if want == string(v) {
			return true
		}
	}
	return false
}

// json is the event inside the frame, without "data: " and "\n\n".
func (fr *frame) json() []byte {
	return fr.b[len("data: ") : len(fr.b)-len("\n\n")]
}

// frameFields holds the top-level members of one event, read at most once
// and only when some filtered listener needs them: unfiltered streams cost
// nothing. All are kept only for events of at most maxKeptMembers members
// (players send a handful): the frame ring holds thousands of events, and
// all the members of a 64 KiB event of ten thousand tiny fields would take
// ten times its size for as long as it stays there. Of a wider event, the
// fields filters ask for are found by a scan each, the first time, and the
// first maxKeptMembers of them are kept.
type frameFields struct {
	once    sync.Once
	members []member
	wide    bool

	mu    sync.Mutex // guards found
	found []member   // wide events: fields looked up so far, absent ones included
}

const maxKeptMembers = 32

// member is one top-level member. A value that is not a string, number or
// bool (object, array, null) is kept with scalar false, so that a later
// member of the same name still overrides an earlier one.
type member struct {
	key, value []byte // both decoded if they had escapes; else views into the frame
	scalar     bool
}

func (ff *frameFields) get(obj []byte) *frameFields {
	ff.once.Do(func() {
		ff.members = make([]member, 0, 8) // players send a handful of top-level fields
		event.Members(obj, func(key, value []byte) bool {
			if len(ff.members) == maxKeptMembers {
				ff.members, ff.wide = nil, true
				return false
			}
			k, _ := event.Unquote(key)
			ff.members = append(ff.members, literal(k, value))
			return true
		})
	})
	return ff
}

// literal returns key's member with value as filters compare it.
func literal(key, value []byte) member {
	switch value[0] {
	case '"':
		v, ok := event.Unquote(value)
		return member{key: key, value: v, scalar: ok}
	case '{', '[', 'n': // object, array, null
		return member{key: key}
	default: // number, true, false
		return member{key: key, value: value, scalar: true}
	}
}

// lookup returns the value of the last member named name, as JSON decoders
// do with duplicate keys, if it is a string, number or bool. obj is the
// event, scanned for a wide one.
func (ff *frameFields) lookup(obj []byte, name string) ([]byte, bool) {
	if ff.wide {
		return ff.lookupWide(obj, name)
	}
	for i := len(ff.members) - 1; i >= 0; i-- {
		if m := ff.members[i]; string(m.key) == name {
			return m.value, m.scalar
		}
	}
	return nil, false
}

func (ff *frameFields) lookupWide(obj []byte, name string) ([]byte, bool) {
	ff.mu.Lock()
	for _, m := range ff.found {
		if string(m.key) == name {
			ff.mu.Unlock()
			return m.value, m.scalar
		}
	}
	ff.mu.Unlock()
	var m member // absent: not scalar
	event.Members(obj, func(key, value []byte) bool {
		if k, _ := event.Unquote(key); string(k) == name {
			m = literal(k, value)
		}
		return true
	})
	ff.mu.Lock()
	if len(ff.found) < maxKeptMembers { // two listeners may both add name: harmless
		if m.key == nil {
			m.key = []byte(name)
		}
		ff.found = append(ff.found, m)
	}
	ff.mu.Unlock()
	return m.value, m.scalar
}
