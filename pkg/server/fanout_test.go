package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// outcome is what the service answered to one tagged POST.
type outcome struct {
	g      tag
	data   string // what listeners must receive if it was accepted
	status int
	resp   ssetest.Response
}

// publishAll runs publishers concurrently; each sends perPublisher tagged
// fixtures in sequence, alternating the two ingest paths, waiting for each
// answer before the next, until stop (if not nil) says so. It returns every
// answer, or the first transport error: no POST may hang or break.
func publishAll(ctx context.Context, srv *ssetest.Server, fixtures [][]byte, publishers, perPublisher int, stop func() bool) ([]outcome, error) {
	paths := []string{"/api/events", "/metrics"}
	results := make([][]outcome, publishers)
	errs := make([]error, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for n := range perPublisher {
				if stop != nil && stop() {
					return
				}
				g := tag{Pub: p, Seq: n}
				body := tagged(fixtures[(p+n)%len(fixtures)], g)
				var want bytes.Buffer
				if errs[p] = json.Compact(&want, body); errs[p] != nil {
					return
				}
				r, err := srv.Post(ctx, paths[(p+n)%2], "application/json", body)
				if err != nil {
					errs[p] = fmt.Errorf("publisher %d, event %d: %w", p, n, err)
					return
				}
				results[p] = append(results[p], outcome{g: g, data: want.String(), status: r.Status, resp: r})
			}
		})
	}
	wg.Wait()
	var all []outcome
	for _, r := range results {
		all = append(all, r...)
	}
	return all, errors.Join(errs...)
}

// acceptedOf returns the events answered 204, and fails on any answer
// other than 204 or, when busyOK, a well-formed 503.
func acceptedOf(t *testing.T, all []outcome, busyOK bool) (map[tag]string, int) {
	t.Helper()
	accepted := map[tag]string{}
	busy := 0
	for _, o := range all {
		switch {
		case o.status == http.StatusNoContent:
			accepted[o.g] = o.data
		case o.status == http.StatusServiceUnavailable && busyOK:
			busy++
			wantError(t, o.resp, http.StatusServiceUnavailable, broadcast.ErrBusy.Error(), nil)
			if ra := o.resp.Header.Get("Retry-After"); ra != "1" {
				t.Errorf("503 Retry-After %q, want 1", ra)
			}
		default:
			t.Errorf("event %+v: status %d %s", o.g, o.status, o.resp.Body)
		}
	}
	return accepted, busy
}

// checkListeners ends the run with the sentinel and checks what each
// collecting listener received against what was accepted.
func checkListeners(t *testing.T, srv *ssetest.Server, waits []func() ([]string, error), accepted map[tag]string) {
	t.Helper()
	publishSentinel(t, srv, loadValid(t)[0])
	for i, wait := range waits {
		got, err := wait()
		if err != nil {
			t.Fatalf("listener %d: %v", i, err)
		}
		checkDelivery(t, "listener "+strconv.Itoa(i), got, accepted)
	}
}

func TestFanOutDeliversEveryAcceptedEventOnceInPublisherOrder(t *testing.T) {
	t.Parallel()
	const listeners, publishers, perPublisher = 20, 8, 50
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	ctx := within(t, 2*time.Minute)
	paths := []string{"/events", "/event-dispatcher"}
	waits := make([]func() ([]string, error), listeners)
	for i := range listeners {
		s := ssetest.Subscribe(t, srv.Client, srv.URL+paths[i%2], nil)
		waits[i] = collect(ctx, s)
	}

	all, err := publishAll(ctx, srv, loadValid(t), publishers, perPublisher, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The queue (1024) holds more than all events together: nothing may be
	// refused.
	accepted, _ := acceptedOf(t, all, false)
	checkListeners(t, srv, waits, accepted)
	h, _ := srv.Health(t)
	if want := uint64(publishers*perPublisher + 1); h.EventsAccepted != want {
		t.Errorf("health events_accepted = %d, want %d", h.EventsAccepted, want)
	}
	if h.ListenersDropped != 0 {
		t.Errorf("health listeners_dropped = %d, want 0", h.ListenersDropped)
	}
}

func TestFullPublishQueueRefusesWith503AndLosesNothingAccepted(t *testing.T) {
	t.Parallel()
	// Many listeners make each fan-out step longer, so that with a queue of
	// one, concurrent publishers find it full.
	const listeners, publishers, perPublisher = 8, 16, 25
	srv := ssetest.Start(t, broadcast.Options{QueueSize: 1}, server.Options{})
	ctx := within(t, 2*time.Minute)
	waits := make([]func() ([]string, error), listeners)
	for i := range listeners {
		waits[i] = collect(ctx, ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil))
	}

	all, err := publishAll(ctx, srv, loadValid(t), publishers, perPublisher, nil)
	if err != nil {
		t.Fatal(err)
	}
	accepted, busy := acceptedOf(t, all, true)
	t.Logf("%d accepted, %d refused with 503", len(accepted), busy)
	if len(accepted) == 0 {
		t.Fatal("no event accepted at all")
	}
	checkListeners(t, srv, waits, accepted)
	h, _ := srv.Health(t)
	// The sentinel may have been refused a few times before it got in.
	if h.EventsAccepted != uint64(len(accepted)+1) || h.EventsBusy < uint64(busy) {
		t.Errorf("health events_accepted %d, events_refused_busy %d; want %d and at least %d",
			h.EventsAccepted, h.EventsBusy, len(accepted)+1, busy)
	}
}

func TestHubCloseEndsStreamsAfterDeliveringEverythingAccepted(t *testing.T) {
	t.Parallel()
	const listeners, publishers = 20, 8
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	streams := make([]*ssetest.Stream, listeners)
	for i := range streams {
		streams[i] = ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	}

	// Publishers keep posting while the hub closes; they stop at their
	// first refusal. Everything answered 204 before that must be delivered.
	var closing atomic.Bool
	var total atomic.Int64
	fixtures := loadValid(t)
	var all []outcome
	var perr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		all, perr = publishAll(within(t, time.Minute), srv, fixtures, publishers, 1000, func() bool {
			total.Add(1)
			return closing.Load()
		})
	}()
	ssetest.Eventually(t, 30*time.Second, "publishers under way", func() (bool, string) {
		return total.Load() >= 40, strconv.FormatInt(total.Load(), 10) + " posts"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Hub.Close(ctx); err != nil {
		t.Fatalf("Hub.Close: %v", err)
	}
	closing.Store(true)
	<-done
	if perr != nil {
		t.Fatal(perr)
	}

	accepted := map[tag]string{}
	for _, o := range all {
		switch o.status {
		case http.StatusNoContent:
			accepted[o.g] = o.data
		case http.StatusServiceUnavailable:
			wantError(t, o.resp, http.StatusServiceUnavailable, broadcast.ErrClosed.Error(), nil)
			if o.resp.Header.Get("Retry-After") == "" {
				t.Error("503 after close without Retry-After")
			}
		default:
			t.Errorf("event %+v: status %d %s", o.g, o.status, o.resp.Body)
		}
	}

	for i, s := range streams {
		var got []string
		var last ssetest.Event
		rctx := within(t, 20*time.Second)
		for {
			e, err := s.Next(rctx)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("listener %d: stream did not end cleanly: %v", i, err)
			}
			if _, ended := last.EndReason(); ended {
				t.Fatalf("listener %d: block %q after the end comment", i, e.Raw)
			}
			if len(e.Data) == 1 && e.Retry == "" && len(e.Comments)+len(e.Other) == 0 {
				got = append(got, e.Data[0])
			} else if _, ended := e.EndReason(); !ended && !e.IsComment() {
				t.Fatalf("listener %d: unexpected block %q", i, e.Raw)
			}
			last = e
		}
		if why, ok := last.EndReason(); !ok || why != broadcast.ErrShutdown.Error() {
			t.Fatalf("listener %d: last block %q is not the shutdown comment", i, last.Raw)
		}
		checkDelivery(t, "listener "+strconv.Itoa(i), got, accepted)
	}

	// A closed hub refuses newcomers the same way.
	r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, "/events", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, r, http.StatusServiceUnavailable, broadcast.ErrClosed.Error(), nil)
	if r.Header.Get("Retry-After") == "" {
		t.Error("GET /events after close: 503 without Retry-After")
	}
}
