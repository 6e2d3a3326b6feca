package broadcast

import (
	"bytes"
	"hash/maphash"
	"slices"
	"sync"

	"event-dispatcher/pkg/event"
)

// Filter keeps the events a listener asked for: those whose top-level
// field, for every Term, holds a string, number or bool whose literal
// (strings decoded, without quotes) is one of the Term's Values. A nil
// Filter keeps every event. A Filter is read-only once built.
//
// What one filtered listener costs per event is bounded by its own filter,
// never by the event: each term is one lookup in the event's index (see
// frameFields) and a comparison that reads at most a few times the longest
// of its values, however long the event's name or value is.
type Filter struct {
	terms []term
}

// Term is one field of a Filter and the values it accepts.
type Term struct {
	Field  string
	Values []string
}

// term is a Term prepared for matching.
type term struct {
	field  string
	hash   uint64   // of field, for wide events' index
	values []string // compared in turn; sorted when there are many
	sorted bool
	maxLen int // of the values: a longer literal cannot match
}

// sortAbove is the number of values beyond which a term searches its values
// (sorted, a copy) rather than comparing them in turn: 256 values cost 8
// comparisons, and 16 bytes each.
const sortAbove = 8

// NewFilter returns a Filter requiring every term, or nil (every event)
// when there is none.
func NewFilter(terms ...Term) *Filter {
	if len(terms) == 0 {
		return nil
	}
	f := &Filter{terms: make([]term, len(terms))}
	for i, t := range terms {
		p := term{field: t.Field, hash: maphash.String(fieldSeed, t.Field), values: t.Values}
		for _, v := range t.Values {
			p.maxLen = max(p.maxLen, len(v))
		}
		if len(t.Values) > sortAbove {
			p.values, p.sorted = slices.Clone(t.Values), true
			slices.Sort(p.values)
		}
		f.terms[i] = p
	}
	return f
}

// keeps reports whether f lets the event in fr through. The event's fields
// are indexed once, by the first filtered listener that looks, and shared.
func (f *Filter) keeps(fr *frame) bool {
	if f == nil {
		return true
	}
	obj := fr.json()
	fields := fr.fields.get(obj)
	for i := range f.terms {
		t := &f.terms[i]
		var ok bool
		if fields.index != nil {
			ok = t.matchesWide(obj, fields.find(obj, t.field, t.hash))
		} else {
			v, scalar := fields.lookup(t.field)
			ok = scalar && t.accepts(v)
		}
		if !ok {
			return false
		}
	}
	return true
}

func (t *term) accepts(v []byte) bool {
	if t.sorted {
		_, ok := slices.BinarySearch(t.values, string(v))
		return ok
	}
	for _, want := range t.values {
		if want == string(v) {
			return true
		}
	}
	return false
}

// matchesWide reports whether the member of obj beginning at offset begin
// (-1: absent) holds an accepted literal. It reads at most a few times
// t.maxLen bytes of the value: a string's escapes make its literal at most
// six times longer than its text (\u00e9 is one character), a number or a
// bool is its literal.
func (t *term) matchesWide(obj []byte, begin int) bool {
	if begin < 0 {
		return false
	}
	v := valueStart(obj, begin)
	switch obj[v] {
	case '{', '[', 'n': // object, array, null
		return false
	case '"':
		lit, ok := stringLiteral(obj, v, 6*t.maxLen+2)
		if !ok {
			return false
		}
		text, ok := event.Unquote(lit) // a copy only with escapes, at most 6 × maxLen bytes
		return ok && t.accepts(text)
	default: // number, true, false
		end := v
		for end < len(obj) && end-v <= t.maxLen && obj[end] != ',' && obj[end] != '}' {
			end++
		}
		return end-v <= t.maxLen && t.accepts(obj[v:end])
	}
}

// json is the event inside the frame, without "data: " and "\n\n".
func (fr *frame) json() []byte {
	return fr.b[len("data: ") : len(fr.b)-len("\n\n")]
}

// frameFields holds the top-level members of one event, read at most once
// and only when some filtered listener needs them: unfiltered streams cost
// nothing.
//
// An event of at most maxKeptMembers members (players send a handful) is
// kept decoded, and a lookup is a short scan. A wider one, up to the tens
// of thousands of tiny members a 64 KiB body can carry, is indexed
// instead: a hash table of where each member begins, 4 bytes per slot and
// 3 slots per 2 members (6 bytes per member) however many filters look,
// fewer when that would make it larger than the event itself.
// Building it reads the event once; a lookup then reads a few slots (with
// the table 2/3 full, 2 on average for a name present, 5 for one absent)
// whatever the name. The hash is seeded at
// random per process, so no event can be shaped to collide.
type frameFields struct {
	once    sync.Once
	members []member
	index   []uint32 // wide events: offset+1 of each member's key; 0 is empty
}

const maxKeptMembers = 32

// fieldSeed seeds the hash of wide events' indexes. Set once at start-up.
var fieldSeed = maphash.MakeSeed()

// member is one top-level member. A value that is not a string, number or
// bool (object, array, null) is kept with scalar false, so that a later
// member of the same name still overrides an earlier one.
type member struct {
	key, value []byte // both decoded if they had escapes; else views into the frame
	scalar     bool
}

func (ff *frameFields) get(obj []byte) *frameFields {
	ff.once.Do(func() {
		n := 0
		ff.members = make([]member, 0, 8) // players send a handful of top-level fields
		event.Members(obj, func(key, value []byte) bool {
			n++
			if len(ff.members) < maxKeptMembers {
				k, _ := event.Unquote(key)
				ff.members = append(ff.members, literal(k, value))
			}
			return true
		})
		if n > maxKeptMembers {
			ff.members = nil
			ff.buildIndex(obj, n)
		}
	})
	return ff
}

// buildIndex indexes the n members of obj, the last of a duplicated name
// winning as in JSON decoders.
func (ff *frameFields) buildIndex(obj []byte, n int) {
	// 3 slots per 2 members, but never more bytes than the event: a member
	// can be as short as 5 bytes ("":1,), and then the table is 4/5 full.
	ff.index = make([]uint32, max(min(n+n/2, len(obj)/4), n+1))
	event.Members(obj, func(key, _ []byte) bool {
		begin := cap(obj) - cap(key) // key is obj[begin:...]
		name, ok := event.Unquote(key)
		if !ok {
			return true
		}
		h := maphash.Bytes(fieldSeed, name)
		i := ff.slot(h)
		for ff.index[i] != 0 && !keyIs(obj, int(ff.index[i]-1), name) {
			i = (i + 1) % len(ff.index)
		}
		ff.index[i] = uint32(begin + 1)
		return true
	})
}

func (ff *frameFields) slot(h uint64) int {
	return int((h >> 32) * uint64(len(ff.index)) >> 32) // h's top bits onto the table
}

// find returns where the member named name begins in obj, or -1.
func (ff *frameFields) find(obj []byte, name string, h uint64) int {
	for i := ff.slot(h); ff.index[i] != 0; i = (i + 1) % len(ff.index) {
		if begin := int(ff.index[i] - 1); keyIs(obj, begin, name) {
			return begin
		}
	}
	return -1
}

// keyIs reports whether the key beginning at obj[begin] is name, reading
// at most a few times len(name) bytes of it.
func keyIs[T string | []byte](obj []byte, begin int, name T) bool {
	lit, ok := stringLiteral(obj, begin, 6*len(name)+2)
	if !ok {
		return false
	}
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1:len(lit)-1]) == string(name)
	}
	k, ok := event.Unquote(lit)
	return ok && string(k) == string(name)
}

// stringLiteral returns the string literal beginning at obj[i], quotes
// included, if it is at most limit bytes long.
func stringLiteral(obj []byte, i, limit int) ([]byte, bool) {
	for j := i + 1; j < len(obj) && j-i < limit; j++ {
		switch obj[j] {
		case '\\':
			j++
		case '"':
			return obj[i : j+1], true
		}
	}
	return nil, false
}

// valueStart returns where the value of the member beginning at obj[begin]
// starts: past its key and the colon.
func valueStart(obj []byte, begin int) int {
	j := begin + 1
	for obj[j] != '"' {
		if obj[j] == '\\' {
			j++
		}
		j++
	}
	return j + 2
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
// do with duplicate keys, if it is a string, number or bool.
func (ff *frameFields) lookup(name string) ([]byte, bool) {
	for i := len(ff.members) - 1; i >= 0; i-- {
		if m := ff.members[i]; string(m.key) == name {
			return m.value, m.scalar
		}
	}
	return nil, false
}
