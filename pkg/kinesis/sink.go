// Package kinesis forwards every accepted event to an Amazon Kinesis data
// stream: a [publish.Sink] that copies each event into a bounded buffer and
// sends it from its own loop with PutRecords, batched, resending only the
// records Kinesis failed, with backoff and jitter. It never slows the
// publish path: when the buffer is full or the stream unreachable, events
// are dropped from this path only, counted by reason and logged once per
// outage; forwarding resumes by itself.
//
// The record is the event: the exact bytes listeners get, no envelope.
package kinesis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	kds "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/rs/zerolog"
)

// Kinesis' own limits (PutRecords).
const (
	MaxBatchRecords = 500     // records per call
	MaxBatchBytes   = 5 << 20 // data and partition keys of one call
	MaxRecordBytes  = 1 << 20 // data and partition key of one record
	MaxKeyChars     = 256     // UTF-16 units of a partition key (an emoji is two)
)

// API is the one call the sink makes: a *kds.Client.
type API interface {
	PutRecords(ctx context.Context, in *kds.PutRecordsInput, optFns ...func(*kds.Options)) (*kds.PutRecordsOutput, error)
}

// Options configure a [Sink]. Zero values take the defaults in brackets.
type Options struct {
	Stream   string // stream name, or its ARN (required)
	Client   API    // required
	KeyField string // top-level field whose value is the partition key; "": a random key per event

	BufferBytes   int64         // events buffered and in flight, in bytes, before new ones are dropped [32 MiB]
	FlushInterval time.Duration // a partial batch waits at most this long [1s]
	MaxInFlight   int           // concurrent PutRecords calls [4]
	CallTimeout   time.Duration // deadline of one PutRecords call [10s]
	MinBackoff    time.Duration // first wait after a failure, before jitter [100ms]
	MaxBackoff    time.Duration // longest wait between attempts [5s]
	DownAfter     int           // calls failing entirely in a row before the state is down [3]
	Logger        zerolog.Logger
}

// Defaults of [Options].
const (
	DefaultBufferBytes   = 32 << 20
	DefaultFlushInterval = time.Second
	DefaultMaxInFlight   = 4
	DefaultCallTimeout   = 10 * time.Second
)

func (o *Options) fill() error {
	if o.Stream == "" || o.Client == nil {
		return errors.New("kinesis: a stream and a client are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.BufferBytes <= 0 {
		o.BufferBytes = DefaultBufferBytes
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 3
	}
	def(&o.FlushInterval, DefaultFlushInterval)
	def(&o.CallTimeout, DefaultCallTimeout)
	def(&o.MinBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 5*time.Second)
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	return nil
}

// record is one event on its way: its own copy of the bytes and its key.
type record struct {
	data []byte
	key  string
}

func (r record) size() int64 { return int64(len(r.data) + len(r.key)) }

// Sink forwards events to one stream. Create it with [New]; Put is safe
// for concurrent use; Close flushes and stops.
type Sink struct {
	opts Options
	log  zerolog.Logger

	// Shared with Put: the events not yet taken by the loop and every
	// buffered byte, in flight included.
	mu       sync.Mutex
	queue    []record
	buffered int64
	closed   bool

	full     chan struct{} // a batch is full: send now (capacity 1)
	stop     chan struct{} // Close began: flush everything
	done     chan struct{} // the loop ended
	ctx      context.Context
	abandon  context.CancelFunc // Close's deadline passed: cut the calls
	results  chan result
	dropping atomic.Bool // a spell of buffer_full drops is going on (logged once)

	stats counters
}

// New starts the sink's loop.
func New(opts Options) (*Sink, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s := &Sink{
		opts:    opts,
		log:     opts.Logger.With().Str("component", "kinesis").Logger(),
		full:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		results: make(chan result, opts.MaxInFlight),
	}
	s.ctx, s.abandon = context.WithCancel(context.Background())
	s.stats.init()
	go s.run()
	return s, nil
}

// Put copies data into the buffer, with its partition key. It never
// blocks: an event that does not fit in the buffer, or in one Kinesis
// record, is dropped and counted.
func (s *Sink) Put(data []byte) {
	r := record{key: partitionKey(data, s.opts.KeyField)}
	n := int64(len(data) + len(r.key))
	if n > MaxRecordBytes {
		if s.stats.dropped[dropTooLarge].Add(1) == 1 {
			s.log.Warn().Int("bytes", len(data)).Int("max_bytes", MaxRecordBytes).Msg("an event larger than a Kinesis record is not forwarded; counted in kinesis_dropped_too_large")
		}
		return
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		s.stats.dropped[dropShutdown].Add(1)
		return
	case s.buffered+n > s.opts.BufferBytes:
		s.mu.Unlock()
		s.stats.dropped[dropBufferFull].Add(1)
		if s.dropping.CompareAndSwap(false, true) {
			s.log.Warn().Int64("buffer_bytes", s.opts.BufferBytes).Msg("Kinesis buffer full: new events are not forwarded until it drains (listeners are unaffected)")
		}
		return
	}
	r.data = append([]byte(nil), data...)
	s.queue = append(s.queue, r)
	s.buffered += n
	// Wake the loop once per batch that fills, not on every event past the
	// first full one: a wake-up costs more than the rest of Put, and the
	// loop takes every full batch it can when it runs.
	ready := len(s.queue)%MaxBatchRecords == 0 || s.buffered/MaxBatchBytes != (s.buffered-n)/MaxBatchBytes
	s.mu.Unlock()
	if ready {
		select {
		case s.full <- struct{}{}:
		default:
		}
	}
}

// Close stops taking events, sends what is buffered until ctx ends, then
// cuts the calls still running and logs how many events were not sent. It
// returns an error naming that count when it is not zero.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if !already {
		close(s.stop)
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		s.abandon()
		<-s.done // calls end at once on a cancelled context
	}
	s.abandon()
	s.mu.Lock()
	left := len(s.queue)
	s.queue = nil
	s.buffered = 0
	s.mu.Unlock()
	// The loop put back whatever it did not get through.
	s.stats.dropped[dropShutdown].Add(uint64(left))
	st := s.Stats()
	if left > 0 {
		s.log.Warn().Int("not_sent", left).Uint64("put", st.Put).Msg("Kinesis: events not sent before the shutdown deadline")
		return fmt.Errorf("kinesis: %d events not sent", left)
	}
	s.log.Info().Uint64("put", st.Put).Msg("Kinesis: every buffered event sent")
	return nil
}

// result is what one PutRecords call came back with.
type result struct {
	batch []record
	out   *kds.PutRecordsOutput
	err   error
}

// loop is the state only the loop goroutine touches.
type loop struct {
	retry    []record       // failed records, resent before the queue
	keys     map[string]int // with a key field: the keys in flight, and in how many records
	inFlight int
	streak   int       // calls in a row with a failure: the backoff's exponent
	whole    int       // calls in a row that failed entirely
	notUntil time.Time // backoff: no call before
	timer    *time.Timer
	closing  bool
	lastErr  string
}

func (s *Sink) run() {
	defer close(s.done)
	l := &loop{timer: time.NewTimer(time.Hour)}
	if s.opts.KeyField != "" {
		l.keys = map[string]int{}
	}
	l.timer.Stop()
	tick := time.NewTicker(s.opts.FlushInterval)
	defer tick.Stop()
	stop := s.stop
	for {
		all := false
		select {
		case <-s.full:
		case <-tick.C:
			all = true
		case <-l.timer.C:
			all = true
		case r := <-s.results:
			l.inFlight--
			s.handle(l, r)
		case <-stop:
			l.closing, stop = true, nil
		case <-s.ctx.Done():
		}
		if s.ctx.Err() != nil {
			s.giveUp(l)
			return
		}
		s.dispatch(l, all || l.closing)
		if l.closing && l.inFlight == 0 && len(l.retry) == 0 && s.pending() == 0 {
			return
		}
	}
}

// giveUp waits for the calls in flight (cut by the cancelled context) and
// puts every record not sent back in the queue, for Close to count.
func (s *Sink) giveUp(l *loop) {
	for l.inFlight > 0 {
		r := <-s.results
		l.inFlight--
		s.handle(l, r)
	}
	s.mu.Lock()
	s.queue = append(l.retry, s.queue...)
	s.mu.Unlock()
	l.retry = nil
}

func (s *Sink) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// dispatch starts calls while there is room in flight and no backoff:
// full batches only, or anything waiting when all is set.
func (s *Sink) dispatch(l *loop, all bool) {
	if wait := time.Until(l.notUntil); wait > 0 {
		l.timer.Reset(wait)
		return
	}
	for l.inFlight < s.opts.MaxInFlight {
		b := s.take(l, all)
		if len(b) == 0 {
			return
		}
		l.inFlight++
		go s.put(b)
	}
}

// take returns the next batch: resends first, then the queue, within
// Kinesis' limits. Unless all is set it returns only a full batch.
//
// With a key field, an event whose key is in a call still in flight waits
// for that call: events of one key reach Kinesis in order, one call at a
// time, while other keys use the concurrent calls. (A record Kinesis fails
// and the sink resends can still land after a later one of its key.)
func (s *Sink) take(l *loop, all bool) []record {
	var b []record
	var size int64
	add := func(r record) bool {
		if len(b) == MaxBatchRecords || size+r.size() > MaxBatchBytes {
			return false
		}
		b, size = append(b, r), size+r.size()
		return true
	}
	ready := false // a full batch, or more waiting than one call takes
	nRetry := 0
	for nRetry < len(l.retry) && add(l.retry[nRetry]) {
		nRetry++
	}
	ready = nRetry < len(l.retry)
	s.mu.Lock()
	defer s.mu.Unlock()
	var held []record // their key is in flight
	i := 0
	for ; !ready && i < len(s.queue); i++ {
		r := s.queue[i]
		if l.keys != nil && l.keys[r.key] > 0 {
			if len(held) == maxHeld {
				ready = true // enough waiting: send what is ready now
				break
			}
			held = append(held, r)
			continue
		}
		if !add(r) {
			ready = true
			break
		}
	}
	ready = ready || len(b) == MaxBatchRecords
	if len(b) == 0 || !all && !ready {
		return nil // wait for the flush: nothing taken
	}
	l.retry = l.retry[nRetry:]
	clear(s.queue[:i]) // the backing array must not keep sent events alive
	if len(held) > 0 {
		s.queue = append(held, s.queue[i:]...)
	} else {
		s.queue = s.queue[i:]
	}
	if len(s.queue) == 0 {
		s.queue = nil
	}
	if l.keys != nil {
		for _, r := range b {
			l.keys[r.key]++
		}
	}
	return b
}

// maxHeld bounds the events a take looks past while their key is in
// flight, so one busy key does not make every take scan the whole queue.
const maxHeld = 4 * MaxBatchRecords

// put makes one PutRecords call and hands its result to the loop.
func (s *Sink) put(b []record) {
	entries := make([]types.PutRecordsRequestEntry, len(b))
	for i, r := range b {
		entries[i] = types.PutRecordsRequestEntry{Data: r.data, PartitionKey: aws.String(r.key)}
	}
	in := &kds.PutRecordsInput{Records: entries}
	if isARN(s.opts.Stream) {
		in.StreamARN = aws.String(s.opts.Stream)
	} else {
		in.StreamName = aws.String(s.opts.Stream)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.CallTimeout)
	start := time.Now()
	out, err := s.opts.Client.PutRecords(ctx, in)
	cancel()
	s.stats.observe(time.Since(start))
	s.results <- result{batch: b, out: out, err: err}
}

// handle accounts for one call's result: records sent leave the buffer,
// failed ones are queued for resending after a backoff.
func (s *Sink) handle(l *loop, r result) {
	s.stats.batches.Add(1)
	if l.keys != nil {
		for _, rec := range r.batch {
			if l.keys[rec.key]--; l.keys[rec.key] <= 0 {
				delete(l.keys, rec.key)
			}
		}
	}
	var failed []record
	switch {
	case r.err != nil && permanent(r.err):
		// Kinesis refuses the request itself, not a record: resending the
		// same bytes would fail forever.
		s.stats.dropped[dropRejected].Add(uint64(len(r.batch)))
		s.release(r.batch)
		s.log.Error().Err(r.err).Int("records", len(r.batch)).Msg("Kinesis refused a batch; its events are dropped")
		return
	case r.err != nil:
		failed = r.batch
		s.stats.fail(errorCode(r.err), len(r.batch))
		l.lastErr = r.err.Error()
	default:
		var sent []record
		for i, e := range r.out.Records {
			if i >= len(r.batch) {
				break
			}
			if e.ErrorCode != nil {
				failed = append(failed, r.batch[i])
				s.stats.fail(*e.ErrorCode, 1)
				l.lastErr = *e.ErrorCode
				if e.ErrorMessage != nil {
					l.lastErr += ": " + *e.ErrorMessage
				}
			} else {
				sent = append(sent, r.batch[i])
			}
		}
		if len(r.out.Records) < len(r.batch) { // not Kinesis: resend what has no answer
			failed = append(failed, r.batch[len(r.out.Records):]...)
		}
		s.stats.put.Add(uint64(len(sent)))
		s.release(sent)
	}
	s.account(l, r, failed)
}

// account moves the state after a call and schedules the resends.
func (s *Sink) account(l *loop, r result, failed []record) {
	before := s.stats.State()
	if len(failed) == 0 {
		l.streak, l.whole = 0, 0
		if len(l.retry) == 0 {
			s.stats.state.Store(int32(OK))
		}
		if before == Down && len(l.retry) == 0 {
			s.log.Info().Uint64("dropped_buffer_full", s.stats.dropped[dropBufferFull].Load()).Msg("Kinesis puts succeed again")
		}
		if s.dropping.Load() && s.bufferedBytes() < s.opts.BufferBytes/2 {
			s.dropping.Store(false)
		}
		return
	}
	l.retry = append(l.retry, failed...)
	l.streak++
	if len(failed) == len(r.batch) {
		l.whole++
	} else {
		l.whole = 0
	}
	state := Retrying
	if l.whole >= s.opts.DownAfter {
		state = Down
	}
	s.stats.state.Store(int32(state))
	if state == Down && before != Down {
		s.log.Error().Str("error", l.lastErr).Str("stream", s.opts.Stream).
			Msg("Kinesis unreachable or refusing: events are buffered up to KINESIS_BUFFER_BYTES and resent; logged once per outage")
	}
	// Full jitter: a random wait up to the exponential bound spreads the
	// replicas' resends instead of synchronising them.
	bound := s.opts.MinBackoff << min(l.streak-1, 20)
	if bound <= 0 || bound > s.opts.MaxBackoff {
		bound = s.opts.MaxBackoff
	}
	wait := s.opts.MinBackoff/2 + rand.N(bound-s.opts.MinBackoff/2+1)
	l.notUntil = time.Now().Add(wait)
}

func (s *Sink) release(b []record) {
	var n int64
	for _, r := range b {
		n += r.size()
	}
	s.mu.Lock()
	s.buffered -= n
	s.mu.Unlock()
}

func (s *Sink) bufferedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buffered
}

func isARN(stream string) bool { return len(stream) > 4 && stream[:4] == "arn:" }
