package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latencies go into a log-linear histogram (the HDR idea): 16 buckets per
// power of two, so any recorded value is reported within 1/16 (6.25 %) of
// the truth, over the whole int64 range, in fixed memory.
const (
	subBits    = 4
	subBuckets = 1 << subBits
	numBuckets = (64 - subBits + 1) * subBuckets
)

// bucketOf returns the bucket of a non-negative value.
func bucketOf(v int64) int {
	if v < subBuckets {
		return int(max(v, 0))
	}
	exp := bits.Len64(uint64(v)) - 1 // >= subBits
	sub := int(v>>(exp-subBits)) & (subBuckets - 1)
	return (exp-subBits+1)*subBuckets + sub
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) int64 {
	if i < subBuckets {
		return int64(i)
	}
	exp := i/subBuckets + subBits - 1
	sub := int64(i % subBuckets)
	width := int64(1) << (exp - subBits)
	return (subBuckets+sub)*width + width - 1
}

// histogram counts values in nanoseconds. Record is safe for concurrent use;
// listeners are spread over a few of them ([shardedHistogram]) so that a
// million records a second do not all hit the same cache lines.
type histogram struct {
	counts [numBuckets]atomic.Uint64
}

func (h *histogram) record(v int64) { h.counts[bucketOf(v)].Add(1) }

// shardedHistogram is a set of histograms merged when read.
type shardedHistogram struct{ shards []histogram }

func newShardedHistogram(n int) *shardedHistogram {
	return &shardedHistogram{shards: make([]histogram, max(n, 1))}
}

func (s *shardedHistogram) shard(i int) *histogram { return &s.shards[i%len(s.shards)] }

// latencySummary is what the report shows of a histogram, in milliseconds.
// Percentiles are bucket upper bounds (at most 6.25 % high); Max and Mean
// are exact.
type latencySummary struct {
	Count  uint64  `json:"count"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
	MeanMS float64 `json:"mean_ms"`
}

// summary merges the shards; maxNS and sumNS are tracked exactly elsewhere.
func (s *shardedHistogram) summary(maxNS, sumNS int64) latencySummary {
	return summarize([]*shardedHistogram{s}, maxNS, sumNS)
}

// summarize merges several sharded histograms.
func summarize(hs []*shardedHistogram, maxNS, sumNS int64) latencySummary {
	var merged [numBuckets]uint64
	var total uint64
	for _, s := range hs {
		for i := range s.shards {
			for b := range merged {
				c := s.shards[i].counts[b].Load()
				merged[b] += c
				total += c
			}
		}
	}
	out := latencySummary{Count: total, MaxMS: ms(maxNS)}
	if total == 0 {
		return out
	}
	out.MeanMS = ms(sumNS / int64(total))
	pct := func(p float64) float64 {
		rank := uint64(p*float64(total) + 0.999999)
		var seen uint64
		for b, c := range merged {
			seen += c
			if seen >= rank {
				return ms(min(bucketHigh(b), maxNS))
			}
		}
		return ms(maxNS)
	}
	out.P50MS, out.P90MS, out.P99MS = pct(0.50), pct(0.90), pct(0.99)
	return out
}

// exactHistogram is a histogram with an exact maximum and sum, safe for
// concurrent use: for figures recorded from many goroutines at once.
type exactHistogram struct {
	h        *shardedHistogram
	max, sum atomic.Int64
}

func newExactHistogram() *exactHistogram { return &exactHistogram{h: newShardedHistogram(1)} }

func (e *exactHistogram) record(v int64) {
	e.h.shard(0).record(v)
	e.sum.Add(v)
	for {
		m := e.max.Load()
		if v <= m || e.max.CompareAndSwap(m, v) {
			return
		}
	}
}

func (e *exactHistogram) summary() latencySummary { return e.h.summary(e.max.Load(), e.sum.Load()) }

func ms(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }
