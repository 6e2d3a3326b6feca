package ssetest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Event is one block of an SSE stream: the lines up to a blank line.
type Event struct {
	Data     []string // the value of each data: line, in order
	Comments []string // each comment line without its ':' and one leading space
	Retry    string   // the value of the last retry: line; "" when none
	Other    []string // every other line, verbatim (the service sends none)
	Raw      string   // the block's exact bytes, blank line included
}

// IsComment reports whether e holds comments only.
func (e Event) IsComment() bool {
	return len(e.Comments) > 0 && len(e.Data) == 0 && e.Retry == "" && len(e.Other) == 0
}

// EndReason returns why the server ended the stream when e is the comment
// it sends last ("end: <reason>"), and false for any other block.
func (e Event) EndReason() (string, bool) {
	if !e.IsComment() || len(e.Comments) != 1 {
		return "", false
	}
	return strings.CutPrefix(e.Comments[0], "end: ")
}

// ErrPartialEvent reports a stream that ended in the middle of a block.
var ErrPartialEvent = errors.New("stream ended in the middle of an event")

// Stream reads an open SSE response. Events are parsed in the background
// as the bytes arrive, and handed out in order by Next.
type Stream struct {
	Resp  *http.Response
	First Event // the block read by Subscribe before it returned

	events chan Event
	err    error // why events was closed; read only after that
	cancel context.CancelFunc
	done   chan struct{}
}

// Open sends GET url with header and starts reading the answer as a
// stream whatever its status; the caller checks Resp. ctx bounds only the
// wait for the response headers; Close ends the stream.
func Open(ctx context.Context, client *http.Client, url string, header http.Header) (*Stream, error) {
	life, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(life, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	// The request lives until Close; ctx only limits the wait for headers.
	stop := context.AfterFunc(ctx, cancel)
	resp, err := client.Do(req)
	if !stop() && err == nil {
		resp.Body.Close()
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return newStream(life, cancel, resp), nil
}

// FromResponse reads resp, obtained some other way (e.g. http.ReadResponse
// on a raw connection), as a stream. Close closes its body.
func FromResponse(resp *http.Response) *Stream {
	life, cancel := context.WithCancel(context.Background())
	return newStream(life, cancel, resp)
}

func newStream(life context.Context, cancel context.CancelFunc, resp *http.Response) *Stream {
	s := &Stream{Resp: resp, events: make(chan Event, 256), cancel: cancel, done: make(chan struct{})}
	go s.read(life)
	return s
}

// Subscribe opens an SSE stream at url, requires the answer the service
// promises (200, text/event-stream, no-cache, X-Accel-Buffering: no) and
// reads the first block, which must be a retry hint alone; once it has been
// read the listener is subscribed and receives every later event. The
// stream is closed at cleanup.
func Subscribe(t testing.TB, client *http.Client, url string, header http.Header) *Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, client, url, header)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(s.Close)
	h := s.Resp.Header
	if s.Resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(s.Resp.Body, 1024))
		t.Fatalf("GET %s: status %d, body %s", url, s.Resp.StatusCode, body)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := h.Values(k); len(got) != 1 || got[0] != want {
			t.Fatalf("GET %s: header %s = %q, want %q", url, k, got, want)
		}
	}
	first, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("GET %s: first block: %v", url, err)
	}
	if first.Retry == "" || len(first.Data)+len(first.Comments)+len(first.Other) > 0 {
		t.Fatalf("GET %s: first block %q is not a retry hint alone", url, first.Raw)
	}
	s.First = first
	return s
}

// Next returns the next block, or ctx's error when none arrives in time,
// or, once the stream has ended, io.EOF for a clean end and the read error
// otherwise (ErrPartialEvent when it stopped mid-block).
func (s *Stream) Next(ctx context.Context) (Event, error) {
	select {
	case e, ok := <-s.events:
		if !ok {
			return Event{}, s.err
		}
		return e, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// NextData returns the next block carrying data, skipping comment-only
// blocks (heartbeats), and fails the test unless it is exactly one data
// line. It returns that line's value.
func (s *Stream) NextData(t testing.TB, ctx context.Context) string {
	t.Helper()
	for {
		e, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for an event: %v", err)
		}
		if e.IsComment() {
			continue
		}
		if len(e.Data) != 1 || len(e.Comments)+len(e.Other) > 0 || e.Retry != "" {
			t.Fatalf("block %q is not one data line", e.Raw)
		}
		return e.Data[0]
	}
}

// Close ends the stream and waits for its reader to stop.
func (s *Stream) Close() {
	s.cancel()
	_ = s.Resp.Body.Close()
	<-s.done
}

func (s *Stream) read(life context.Context) {
	defer close(s.done)
	defer close(s.events)
	br := bufio.NewReaderSize(s.Resp.Body, 64<<10)
	var cur Event
	var raw strings.Builder
	for first := true; ; first = false {
		line, err := br.ReadString('\n')
		raw.WriteString(line)
		if first {
			// One leading byte order mark is ignored, as the SSE format
			// says; Raw keeps it.
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if err != nil {
			switch {
			case err == io.EOF && raw.Len() > 0:
				s.err = fmt.Errorf("%w: %q", ErrPartialEvent, raw.String())
			default:
				s.err = err
			}
			return
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line != "" {
			cur.add(line)
			continue
		}
		cur.Raw = raw.String()
		raw.Reset()
		select {
		case s.events <- cur:
		case <-life.Done():
			s.err = life.Err()
			return
		}
		cur = Event{}
	}
}

// add parses one line as the SSE format defines it: "field: value", one
// optional space after the colon, ':' first for a comment.
func (e *Event) add(line string) {
	if c, ok := strings.CutPrefix(line, ":"); ok {
		e.Comments = append(e.Comments, strings.TrimPrefix(c, " "))
		return
	}
	field, value, _ := strings.Cut(line, ":")
	value = strings.TrimPrefix(value, " ")
	switch field {
	case "data":
		e.Data = append(e.Data, value)
	case "retry":
		e.Retry = value
	default:
		e.Other = append(e.Other, line)
	}
}
