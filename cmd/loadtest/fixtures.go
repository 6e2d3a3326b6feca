package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"event-dispatcher/pkg/fixtures"
)

// fixtureNames lists the real player messages (Pillarbox START, STOP,
// HEARTBEAT, ERROR) that can be sent, without the .json suffix, so the load
// has the size and shape of production traffic.
func fixtureNames() []string {
	var names []string
	for _, n := range fixtures.Valid() {
		names = append(names, strings.TrimSuffix(n, ".json"))
	}
	return names
}

// loadFixture returns the named fixture, compacted unless raw is set (real
// players send JSON.stringify output, which is compact).
func loadFixture(name string, raw bool) ([]byte, error) {
	if !slices.Contains(fixtureNames(), name) {
		return nil, fmt.Errorf("unknown fixture %q (have: %s)", name, strings.Join(fixtureNames(), ", "))
	}
	b, err := fixtures.Get(name + ".json")
	if err != nil {
		return nil, err
	}
	if raw {
		return b, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("fixture %s: %w", name, err)
	}
	return buf.Bytes(), nil
}

// injector builds event bodies: the fixture with
// "lt_seq":n,"lt_pub":id,"lt_sent_ns":t inserted right after its opening
// brace, by byte splicing, so the rest of the fixture is sent exactly as
// stored.
type injector struct {
	head []byte // the fixture up to and including '{'
	tail []byte // the rest; starts with a member, or with '}' when empty
	sep  bool   // the fixture has members: a comma follows the injected ones
}

func newInjector(fixture []byte) (injector, error) {
	i := bytes.IndexByte(fixture, '{')
	if i < 0 || !json.Valid(fixture) {
		return injector{}, fmt.Errorf("fixture is not a JSON object")
	}
	rest := fixture[i+1:]
	return injector{
		head: fixture[:i+1],
		tail: rest,
		sep:  bytes.TrimLeft(rest, " \t\r\n")[0] != '}',
	}, nil
}

// size is an upper bound of the length of one body.
func (in injector) size() int { return len(in.head) + len(in.tail) + 80 }

// appendBody appends one event body to dst.
func (in injector) appendBody(dst []byte, seq uint64, pub int, sentNS int64) []byte {
	dst = append(dst, in.head...)
	dst = append(dst, `"lt_seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"lt_pub":`...)
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, `,"lt_sent_ns":`...)
	dst = strconv.AppendInt(dst, sentNS, 10)
	if in.sep {
		dst = append(dst, ',')
	}
	return append(dst, in.tail...)
}

// stamp is what a listener reads back from one delivered event.
type stamp struct {
	seq    uint64
	pub    int64
	sentNS int64
}

// parseStamp finds the injected members in an event as delivered. They are
// looked up by name rather than by position, so a server that reorders
// members or adds its own (a client IP) is still measured.
func parseStamp(data []byte) (stamp, bool) {
	seq, ok1 := intMember(data, `"lt_seq":`)
	pub, ok2 := intMember(data, `"lt_pub":`)
	sent, ok3 := intMember(data, `"lt_sent_ns":`)
	if !ok1 || !ok2 || !ok3 || seq < 0 {
		return stamp{}, false
	}
	return stamp{seq: uint64(seq), pub: pub, sentNS: sent}, true
}

// intMember parses the integer that follows key (which includes the colon),
// allowing whitespace after the colon. It is hand-rolled because it runs
// once per delivery and must not allocate.
func intMember(data []byte, key string) (int64, bool) {
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(data[i+len(key):], " \t\r\n")
	neg := len(rest) > 0 && rest[0] == '-'
	if neg {
		rest = rest[1:]
	}
	var n int64
	digits := 0
	for ; digits < len(rest) && rest[digits] >= '0' && rest[digits] <= '9'; digits++ {
		d := int64(rest[digits] - '0')
		if n > (math.MaxInt64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if digits == 0 {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
