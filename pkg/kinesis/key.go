package kinesis

import (
	"math/rand/v2"
	"strconv"
	"unicode/utf8"

	"event-dispatcher/pkg/event"
)

// partitionKey returns the event's partition key: the text of the top-level
// field (a string's characters, a number as written), so that events with
// the same value land on the same shard, in order. Missing, empty, or not a
// string or number (null, true, an object): a random key, which spreads
// events evenly over the shards. A value longer than Kinesis allows (256
// characters) is cut to its first 256: the same value still gives the same
// key, and two values differing only beyond that share a shard, which only
// affects placement.
func partitionKey(data []byte, field string) string {
	if field == "" {
		return randomKey()
	}
	var key []byte
	event.Members(data, func(k, v []byte) bool {
		name, ok := event.Unquote(k)
		if !ok || string(name) != field {
			return true
		}
		key = nil
		switch {
		case len(v) > 0 && v[0] == '"':
			key, _ = event.Unquote(v)
		case len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9'):
			key = v
		}
		return true // the last member of that name counts, as for filters and JSON decoders
	})
	if len(key) == 0 {
		return randomKey()
	}
	if utf8.RuneCount(key) > MaxKeyChars {
		cut, n := 0, 0
		for n < MaxKeyChars {
			_, size := utf8.DecodeRune(key[cut:])
			cut += size
			n++
		}
		key = key[:cut]
	}
	return string(key)
}

// randomKey is 16 hexadecimal digits: Kinesis hashes keys with MD5 to
// choose a shard, so any random value spreads events evenly.
func randomKey() string {
	return strconv.FormatUint(rand.Uint64()|1<<63, 16)
}
