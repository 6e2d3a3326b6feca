package kinesis

import (
	"math/rand/v2"
	"strconv"
	"unicode/utf16"
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
// affects placement. Kinesis counts UTF-16 units, so a character beyond the
// Basic Multilingual Plane (an emoji) counts two and is never split: a key
// one unit too long fails the whole call (ValidationException), dropping
// every event of the batch.
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
	return string(cutKey(key))
}

// cutKey returns the longest prefix of key that is at most MaxKeyChars
// UTF-16 units, whole characters only.
func cutKey(key []byte) []byte {
	cut, units := 0, 0
	for cut < len(key) {
		r, size := utf8.DecodeRune(key[cut:])
		n := utf16.RuneLen(r)
		if n < 1 {
			n = 1 // not a valid character: Kinesis sees U+FFFD, one unit
		}
		if units+n > MaxKeyChars {
			break
		}
		cut, units = cut+size, units+n
	}
	return key[:cut]
}

// randomKey is 16 hexadecimal digits: Kinesis hashes keys with MD5 to
// choose a shard, so any random value spreads events evenly.
func randomKey() string {
	return strconv.FormatUint(rand.Uint64()|1<<63, 16)
}
