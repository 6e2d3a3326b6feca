package main

import (
	"math/bits"
	"slices"
	"sync"
)

// seqSet is a growable bitset of sequence numbers relative to a phase's
// first one. It is not safe for concurrent use.
type seqSet struct{ words []uint64 }

// add sets bit i and reports whether it was clear.
func (s *seqSet) add(i uint64) bool {
	w := int(i / 64)
	if w >= len(s.words) {
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
	}
	m := uint64(1) << (i % 64)
	if s.words[w]&m != 0 {
		return false
	}
	s.words[w] |= m
	return true
}

// countIn returns how many bits of s from bit from on are set in acc and
// how many are not.
func (s *seqSet) countIn(acc []uint64, from uint64) (in, out uint64) {
	for w := int(from / 64); w < len(s.words); w++ {
		v := s.words[w]
		if w == int(from/64) {
			v &^= lowBits(from)
		}
		var a uint64
		if w < len(acc) {
			a = acc[w]
		}
		in += uint64(bits.OnesCount64(v & a))
		out += uint64(bits.OnesCount64(v &^ a))
	}
	return in, out
}

// lowBits is the mask of the bits below i within its word.
func lowBits(i uint64) uint64 { return 1<<(i%64) - 1 }

// suffixCounter counts the bits of a set from any position on, in constant
// time after one pass.
type suffixCounter struct {
	words  []uint64
	before []uint64 // before[w]: bits set in words[:w]
}

func newSuffixCounter(words []uint64) suffixCounter {
	before := make([]uint64, len(words)+1)
	for w, v := range words {
		before[w+1] = before[w] + uint64(bits.OnesCount64(v))
	}
	return suffixCounter{words: words, before: before}
}

// from returns how many bits are set from bit i on.
func (c suffixCounter) from(i uint64) uint64 {
	w := int(i / 64)
	if w >= len(c.words) {
		return 0
	}
	total := c.before[len(c.words)]
	return total - c.before[w] - uint64(bits.OnesCount64(c.words[w]&lowBits(i)))
}

// syncSeqSet is a seqSet shared by the publishers: the accepted events.
// One lock per POST costs nothing next to the POST itself.
type syncSeqSet struct {
	mu  sync.Mutex
	set seqSet
	n   uint64
}

func (s *syncSeqSet) add(i uint64) {
	s.mu.Lock()
	if s.set.add(i) {
		s.n++
	}
	s.mu.Unlock()
}

// count returns how many distinct numbers were added.
func (s *syncSeqSet) count() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// words returns the bitset; call it only once every writer is done.
func (s *syncSeqSet) words() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set.words
}

// snapshot returns a copy of the bitset, safe to read while writers go on.
func (s *syncSeqSet) snapshot() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.set.words)
}
