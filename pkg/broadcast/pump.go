package broadcast

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The pump keeps r3labs responsive at saturation. r3labs gives each stream
// one goroutine that selects among sign-ups, departures and events, and
// fans each event out by sending it to every subscriber's 64-slot channel.
// Fed one event at a time from a deep queue, that goroutine is always busy:
// sign-ups and departures wait behind whole rounds over every listener
// (tens of seconds at 10,000 listeners), and once registered a newcomer
// queues behind the thousands of loops each round wakes. So:
//
//   - One r3labs event carries a run of up to batchSize sequence numbers:
//     far fewer rounds for the same events.
//   - Listeners are spread over several shards (r3labs streams), served one
//     after another: a round wakes only the loops of one shard.
//   - A shard's streams are unbuffered and a batch is first offered with
//     TryPublish, which succeeds only while the shard's goroutine is idle,
//     so sign-ups and departures already waiting go first. After
//     handPatience the pump waits its turn, so events are not starved.
//   - The gate: a shard has at most gateDepth batches in flight. It gets
//     the next one only once every loop that was registered when the
//     oldest was handed over has taken that one (the last to take it wakes
//     the pump), or gateTimeout after it. Rounds then never block on a full
//     subscriber channel.
const (
	batchSize    = 15
	gateTimeout  = 100 * time.Millisecond
	handPatience = 10 * time.Millisecond
)

// gateDepth is how many batches a shard may have in flight: handed over
// but not yet taken by every loop. One would make every hand-over wait for
// the slowest loop of the batch before, which on a busy machine stalls the
// whole pipeline; a few keep it flowing. Each slot of a loop's 64-slot
// channel holds one batch (or one heartbeat), so gateDepth batches in
// flight use at most gateDepth of them.
const gateDepth = 4

// inflight is one batch a shard's loops have yet to take.
type inflight struct {
	last     atomic.Uint64 // last sequence number of the batch
	need     atomic.Int64  // loops that still have to take it
	openedAt time.Time     // when it was handed over; pump only
}

// shard is one r3labs stream and the listeners placed on it.
type shard struct {
	id  string        // r3labs stream name
	req *http.Request // subscription template, see subscribeRequest

	assigned int // listeners placed here, for choosing the least loaded; guarded by Hub.mu

	mu      sync.Mutex
	live    int             // listeners registered with r3labs and not yet gone
	members []*subscription // subscribing or subscribed, for the frame release; each knows its slot

	received atomic.Uint64 // last sequence number the shard's goroutine has taken

	cur     atomic.Uint64 // last sequence number of the newest batch handed over
	batches [gateDepth]inflight
	depth   int           // batches in flight at most: gateDepth; tests lower it
	next    int           // slot of the next batch, which held the batch depth before; pump only
	gate    chan struct{} // capacity 1: the last loop to take a batch wakes the pump
}

// oldest is the batch whose slot the next one takes: the gate waits for it.
func (sh *shard) oldest() *inflight { return &sh.batches[sh.next] }

// open marks the batch ending at last as handed over to every loop
// registered now.
func (sh *shard) open(last uint64) {
	b := sh.oldest()
	sh.mu.Lock()
	b.last.Store(last)
	b.need.Store(int64(sh.live))
	sh.cur.Store(last)
	select { // a late wake-up for an earlier batch
	case <-sh.gate:
	default:
	}
	sh.mu.Unlock()
	b.openedAt = time.Now()
	sh.next = (sh.next + 1) % sh.depth
}

// join makes s a member before it subscribes to r3labs: from now on the
// frames it may look up are kept. It can be handed no batch that the
// shard's goroutine had taken before.
func (sh *shard) join(s *subscription) {
	sh.mu.Lock()
	s.taken.Store(sh.received.Load())
	s.slot = int32(len(sh.members))
	sh.members = append(sh.members, s)
	sh.mu.Unlock()
}

// lowest returns the smallest number below which every member has taken
// everything, or upTo if that is smaller. It runs every releaseEvery while
// frames are held, under the lock that sign-ups, departures and the pump
// also take, over every member: a slice, which it reads an order of
// magnitude faster than a map's entries.
func (sh *shard) lowest(upTo uint64) uint64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, s := range sh.members {
		upTo = min(upTo, s.taken.Load())
	}
	return upTo
}

// forget removes s from the members, moving the last into its slot, and
// gives back the slice's memory once far fewer are left (a mass
// departure). Called with mu held.
func (sh *shard) forget(s *subscription) {
	last := len(sh.members) - 1
	moved := sh.members[last]
	sh.members[s.slot], moved.slot = moved, s.slot
	sh.members[last] = nil
	sh.members = sh.members[:last]
	if c := cap(sh.members); c > 64 && len(sh.members) < c/4 {
		sh.members = append(make([]*subscription, 0, 2*len(sh.members)), sh.members...)
	}
}

// confirm counts s as registered with r3labs: it receives every batch
// handed over from now on. Called from s's r3labs loop.
func (sh *shard) confirm(s *subscription) {
	sh.mu.Lock()
	sh.live++
	s.joined = sh.cur.Load()
	sh.mu.Unlock()
}

// took records that s's loop has taken the batch ending at last. A loop
// that was not counted for it (joined later) or takes a batch whose slot
// has been reused changes nothing. A take racing with the reuse of its
// slot can open the gate one loop early: that costs only an earlier
// hand-over, never an event.
func (sh *shard) took(s *subscription, last uint64) {
	s.taken.Store(last)
	if last <= s.joined {
		return
	}
	for i := range sh.batches {
		if b := &sh.batches[i]; b.last.Load() == last {
			sh.taken(b)
			return
		}
	}
}

// leave uncounts s once r3labs has let go of it, and stops the gate from
// waiting for batches it will never take: those it was counted for (handed
// over after it joined) and has not taken (loops take batches in order).
func (sh *shard) leave(s *subscription) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.forget(s)
	if !s.confirmed {
		return
	}
	sh.live--
	for i := range sh.batches {
		if b := &sh.batches[i]; b.last.Load() > max(s.joined, s.taken.Load()) {
			sh.taken(b)
		}
	}
}

func (sh *shard) taken(b *inflight) {
	if b.need.Add(-1) == 0 {
		select {
		case sh.gate <- struct{}{}:
		default:
		}
	}
}

// pump is the single goroutine that hands accepted events to the shards.
type pump struct {
	h         *Hub
	shards    []*shard
	wakeC     chan struct{} // capacity 1
	limit     uint64        // QueueSize: events waiting beyond which Publish refuses
	limitB    uint64        // QueueBytes: bytes waiting beyond which Publish refuses
	maxLag    time.Duration
	stall     time.Duration
	heartbeat time.Duration
	gateWait  time.Duration // gateTimeout; tests shorten it
	hb        handout       // shared by every heartbeat

	handed       atomic.Uint64      // last sequence number handed to every shard
	handedB      atomic.Uint64      // bytes of every frame handed to every shard (frame.queued of handed)
	perBatch     atomic.Int64       // nanoseconds per batch handed to every shard over the last window, see pace
	worst        atomic.Int64       // longest wait of an event for its hand-over, in nanoseconds
	window       time.Duration      // see pace
	winTime      time.Duration      // busy time in the current window; pump only
	winBatches   int64              // batches in the current window; pump only
	winSlowest   time.Duration      // the slowest batch in the current window; pump only
	winWaited    time.Duration      // the longest wait of an event handed out in the current window; pump only
	recent       [paceWindows]int64 // the pace of the last windows, newest at recent[nextWin-1]; pump only
	nextWin      int
	handStart    atomic.Int64 // UnixNano when the hand-over under way began; 0 if none
	lastProgress atomic.Int64 // UnixNano of the last hand-over
}

func newPump(h *Hub, opts Options) *pump {
	p := &pump{
		h: h, wakeC: make(chan struct{}, 1), limit: uint64(opts.QueueSize), limitB: uint64(opts.QueueBytes), maxLag: opts.MaxLag, window: paceWindow(opts.MaxLag),
		stall: opts.StallAfter, heartbeat: opts.Heartbeat, gateWait: gateTimeout, hb: heartbeatHandout(),
	}
	p.lastProgress.Store(time.Now().UnixNano())
	for i := range opts.Shards {
		id := "events-" + strconv.Itoa(i)
		h.fan.createStream(id)
		p.shards = append(p.shards, &shard{id: id, req: subscribeRequest(id), depth: gateDepth, gate: make(chan struct{}, 1)})
	}
	return p
}

// leastLoaded returns the shard with the fewest listeners. Called with
// Hub.mu held.
func (p *pump) leastLoaded() *shard {
	best := p.shards[0]
	for _, sh := range p.shards[1:] {
		if sh.assigned < best.assigned {
			best = sh
		}
	}
	return best
}

func (p *pump) wake() {
	select {
	case p.wakeC <- struct{}{}:
	default:
	}
}

// saturated reports whether a publish must be refused: QueueSize events
// or QueueBytes already wait, the oldest of them has waited longer than MaxLag, or, at
// the pace the fan-out has kept over its last window, handing out the
// events already waiting would take longer than MaxLag. The last keeps the
// lag of accepted events near MaxLag when each round is slow (many
// listeners): the age of the oldest alone would let a second's worth of
// fast POSTs queue up, which a slow fan-out then takes many seconds to
// work off.
//
// The look-ahead must not turn a hiccup into refusals: the pace is the
// best of the last windows of busy time (see pace), so slow batches (a
// scheduling pause, a GC, a gate wait) must last over several windows to
// count; and it is a cost per batch, not per event, since handing over a
// batch costs about the same whatever its size: the events waiting go out
// batchSize at a time.
//
// The two sizes bound memory, not time: a burst of small events from
// hundreds of publishers at once may queue thousands in the few tens of
// milliseconds a busy machine takes to schedule the pump, and is to be
// accepted while it stays under MaxLag.
// Called with Hub.pubMu held; seq is the last number published and queued
// the bytes of every frame published (Hub.queued).
func (p *pump) saturated(seq, queued uint64, now time.Time) bool {
	done := p.handed.Load()
	waiting := seq - done
	if waiting == 0 {
		return false
	}
	if waiting >= p.limit || queued-p.handedB.Load() >= p.limitB {
		return true
	}
	batches := (waiting + batchSize - 1) / batchSize
	if time.Duration(batches)*time.Duration(p.perBatch.Load()) > p.maxLag {
		return true
	}
	f := p.h.frames.get(done + 1)
	return f != nil && now.Sub(f.at) > p.maxLag
}

// pace records that a batch took took to hand to every shard after the
// batch before, while events were waiting. The pace admission looks ahead
// with is the best of the last paceWindows averages, each over a window of
// at least paceBatches batches and window of such time, leaving out the
// window's slowest batch: long enough that a few slow batches barely move
// it, short enough that rounds slowing down for good show within about
// MaxLag.
//
// The slowest batch is left out because on a busy machine it is most often
// a pause of the whole process (descheduled, a GC): hundreds of
// milliseconds in which nothing was published either, and which says
// nothing of how fast the events waiting will be handed out. Counted, one
// such pause made the pace of the 8 batches around it 40 ms each, against
// 1 ms before and after, and admission refused POSTs for the next window
// while the longest wait stayed at a third of MaxLag. On a machine where
// the process gets a fraction of a core, whole windows are slow while the
// next is fast: one window's pace of 30 ms a batch predicted 6 s for 2,935
// events waiting, which were all handed out within 0.6 s. Hence the best of
// several windows. Rounds slow for good make every batch of every window
// slow, the ones kept too.
//
// The best of several windows is trusted only while it is borne out: once
// an event handed out in a window has waited half of MaxLag, that window's
// own pace is taken instead, however fast the ones before were. On a
// process starved for good (one core shared with a busy loop), fast
// windows between slow ones otherwise let a queue build up that took up to
// 8.8 s to hand out, against a MaxLag of 1 s.
// Pump goroutine only, but for perBatch.
func (p *pump) pace(took time.Duration) {
	p.winTime += took
	p.winBatches++
	p.winSlowest = max(p.winSlowest, took)
	if p.winTime >= p.window && p.winBatches >= paceBatches {
		latest := int64(p.winTime-p.winSlowest) / (p.winBatches - 1)
		p.recent[p.nextWin%paceWindows] = latest
		p.nextWin++
		best := p.recent[0]
		for _, w := range p.recent[:min(p.nextWin, paceWindows)] {
			best = min(best, w)
		}
		if p.winWaited >= p.maxLag/2 {
			best = latest
		}
		p.perBatch.Store(best)
		p.winTime, p.winBatches, p.winSlowest, p.winWaited = 0, 0, 0, 0
	}
}

// paceBatches is the fewest batches a pace window averages.
const paceBatches = 8

// paceWindows is how many windows the pace is the best of.
const paceWindows = 4

// paceWindow is the busy time a pace window spans for a given MaxLag.
func paceWindow(maxLag time.Duration) time.Duration { return max(maxLag/4, 100*time.Millisecond) }

// waited records how long the oldest event of a batch just handed out
// waited, for Stats and for the pace of the window (see pace). Pump
// goroutine only, but for worst.
func (p *pump) waited(d time.Duration) {
	p.winWaited = max(p.winWaited, d)
	if int64(d) > p.worst.Load() {
		p.worst.Store(int64(d))
	}
}

// lag returns how many accepted events have not been handed to every shard
// yet, and how long the oldest of them has waited.
func (p *pump) lag(now time.Time) (int64, time.Duration) {
	done := p.handed.Load() // first: seq only grows
	seq := p.h.seq.Load()
	if seq <= done {
		return 0, 0
	}
	var age time.Duration
	if f := p.h.frames.get(done + 1); f != nil {
		age = max(0, now.Sub(f.at))
	}
	return int64(seq - done), age
}

// wedged reports a fan-out that has made no progress at all for the stall
// period while work was pending: a hand-over stuck that long, or events
// waiting that long with no hand-over since.
func (p *pump) wedged(now time.Time) bool {
	if start := p.handStart.Load(); start != 0 && now.UnixNano()-start > int64(p.stall) {
		return true
	}
	_, age := p.lag(now)
	return age > p.stall && now.UnixNano()-p.lastProgress.Load() > int64(p.stall)
}

// run hands everything accepted to every shard, batch by batch, until ctx
// ends, with a heartbeat every period.
func (p *pump) run(ctx context.Context) {
	var beat <-chan time.Time
	if p.heartbeat > 0 {
		t := time.NewTicker(p.heartbeat)
		defer t.Stop()
		beat = t.C
	}
	gate := time.NewTimer(time.Hour)
	gate.Stop()
	// The pace is sampled only between batches handed out back to back,
	// with events already waiting: time spent idle is not fan-out time.
	var prev time.Time
	backlog := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat:
			p.handAll(ctx, p.hb)
		case <-p.wakeC:
		}
		backlog = false
		for {
			done := p.handed.Load()
			if p.h.seq.Load() == done {
				break
			}
			// Events that arrive while the first shard's gate is shut join
			// the batch.
			p.await(ctx, p.shards[0], gate)
			last := min(p.h.seq.Load(), done+batchSize)
			ev := batchHandout(done+1, last)
			// Read before the hand-over: once handed, the frame may be
			// released at any time.
			var handedB uint64
			if f := p.h.frames.get(last); f != nil {
				handedB = f.queued
			}
			for _, sh := range p.shards {
				p.await(ctx, sh, gate)
				sh.open(last)
				if !p.hand(ctx, sh, ev) {
					return
				}
				sh.received.Store(last)
			}
			p.handed.Store(last)
			if handedB != 0 {
				p.handedB.Store(handedB)
			}
			now := time.Now()
			if backlog {
				p.pace(now.Sub(prev))
			}
			if f := p.h.frames.get(done + 1); f != nil {
				p.waited(now.Sub(f.at))
			}
			prev, backlog = now, p.h.seq.Load() > last
			select { // a long backlog must not hold heartbeats back
			case <-beat:
				p.handAll(ctx, p.hb)
			default:
			}
		}
	}
}

// handAll hands an ungated event (a heartbeat) to every shard.
func (p *pump) handAll(ctx context.Context, ev handout) {
	for _, sh := range p.shards {
		if !p.hand(ctx, sh, ev) {
			return
		}
	}
}

// await waits until the shard's loops have all taken the batch whose slot
// the next one takes (handed over gateDepth batches ago), or gateTimeout
// after it was handed over. A wake-up can be stale or for another batch,
// so the count decides, not the wake-up.
func (p *pump) await(ctx context.Context, sh *shard, t *time.Timer) {
	b := sh.oldest()
	for b.need.Load() > 0 {
		wait := p.gateWait - time.Since(b.openedAt)
		if wait <= 0 {
			return
		}
		t.Reset(wait)
		select {
		case <-sh.gate:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// waitHanded waits until everything up to target has been handed to every
// shard, or ctx ends.
func (p *pump) waitHanded(ctx context.Context, target uint64) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for p.handed.Load() < target {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// hand gives ev to the shard's goroutine: first only while it is idle, so
// that waiting sign-ups and departures go first, then, after handPatience,
// waiting its turn. False when ctx ended.
func (p *pump) hand(ctx context.Context, sh *shard, ev handout) bool {
	start := time.Now()
	p.handStart.Store(start.UnixNano())
	defer p.handStart.Store(0)
	for try := 0; !p.h.fan.offer(sh.id, ev); try++ {
		if ctx.Err() != nil {
			return false
		}
		switch {
		case try < 8:
			runtime.Gosched()
		case time.Since(start) < handPatience:
			time.Sleep(50 * time.Microsecond)
		default:
			// Returns once taken, or when the stream is closed (Hub.Close,
			// after every listener is gone).
			p.h.fan.give(sh.id, ev)
			p.lastProgress.Store(time.Now().UnixNano())
			return ctx.Err() == nil
		}
	}
	p.lastProgress.Store(time.Now().UnixNano())
	return true
}
