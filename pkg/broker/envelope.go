package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
)

// Every message on the channel starts with a fixed-size header naming the
// replica that sent it and what it is, so that a replica can skip its own
// events (it has already delivered them locally) and find its own probes,
// without decoding or re-encoding the event's JSON:
//
//	ed1 <16 hex digits of origin> <kind> <payload>
//
// kind is 'e' for an event (payload: the compact JSON sent to listeners)
// or 'p' for a probe (payload: a decimal sequence number).
const (
	magic      = "ed1 "
	originLen  = 16
	headerLen  = len(magic) + originLen + 3
	kindEvent  = 'e'
	kindProbe  = 'p'
	originSize = originLen / 2
)

// origin identifies one running replica on the channel.
type origin [originLen]byte

func newOrigin() origin {
	var raw [originSize]byte
	_, _ = rand.Read(raw[:]) // never fails (crypto/rand panics instead)
	var o origin
	hex.Encode(o[:], raw[:])
	return o
}

// seal returns header + payload in one new slice: the caller's payload may
// be reused as soon as seal returns.
func (o origin) seal(kind byte, payload []byte) []byte {
	msg := make([]byte, headerLen+len(payload))
	n := copy(msg, magic)
	n += copy(msg[n:], o[:])
	msg[n], msg[n+1], msg[n+2] = ' ', kind, ' '
	copy(msg[headerLen:], payload)
	return msg
}

// open splits a message into its origin, kind and payload; ok is false for
// anything this service did not write.
func open(msg []byte) (from origin, kind byte, payload []byte, ok bool) {
	if len(msg) < headerLen || !bytes.HasPrefix(msg, []byte(magic)) {
		return from, 0, nil, false
	}
	n := copy(from[:], msg[len(magic):])
	n += len(magic)
	if msg[n] != ' ' || msg[n+2] != ' ' || (msg[n+1] != kindEvent && msg[n+1] != kindProbe) {
		return from, 0, nil, false
	}
	return from, msg[n+1], msg[headerLen:], true
}
