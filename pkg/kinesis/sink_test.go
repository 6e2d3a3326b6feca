package kinesis_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/rs/zerolog"

	"event-dispatcher/internal/brokertest"
	"event-dispatcher/internal/kinesistest"
	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/kinesis"
)

// newSink builds the sink the way the service does (NewClient reads the
// standard AWS variables, pointed at endpoint), with short intervals.
func newSink(t *testing.T, endpoint, stream string, tune func(*kinesis.Options)) (*kinesis.Sink, *brokertest.Log) {
	t.Helper()
	kinesistest.Env(t, endpoint)
	logs := &brokertest.Log{}
	client, err := kinesis.NewClient(context.Background(), stream, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	opts := kinesis.Options{
		Stream: stream, Client: client, FlushInterval: 20 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, CallTimeout: 5 * time.Second,
		Logger: zerolog.New(logs),
	}
	if tune != nil {
		tune(&opts)
	}
	s, err := kinesis.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s, logs
}

func closeWithin(t *testing.T, s *kinesis.Sink, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Close(ctx)
}

// waitStats waits until the sink's counters satisfy cond.
func waitStats(t *testing.T, s *kinesis.Sink, d time.Duration, what string, cond func(kinesis.Stats) bool) {
	t.Helper()
	ssetest.Eventually(t, d, what, func() (bool, string) {
		st := s.Stats()
		return cond(st), fmt.Sprintf("%+v", st)
	})
}

// Events put are read back from every shard of a real Kinesis API exactly
// once, byte for byte, with the partition key taken from the field: the
// same key always on the same shard, in order.
func TestEveryEventReadBackFromKinesalite(t *testing.T) {
	k := kinesistest.Start(t)
	k.CreateStream("events", 3)
	s, _ := newSink(t, k.Endpoint, "events", func(o *kinesis.Options) { o.KeyField = "session" })

	long := strings.Repeat("é", 300) // 300 characters, 600 bytes: cut to 256 characters
	var sent [][]byte
	wantKey := map[string]string{}
	for i := range 1200 {
		var ev string
		switch i % 6 {
		case 0:
			ev = fmt.Sprintf(`{"session":"s-%d","seq":%d,"t":"\u00e9\"q\""}`, i%7, i)
			wantKey[ev] = fmt.Sprintf("s-%d", i%7)
		case 1:
			ev = fmt.Sprintf(`{"seq":%d,"session":%d}`, i, 1000+i%5)
			wantKey[ev] = fmt.Sprint(1000 + i%5)
		case 2:
			ev = fmt.Sprintf(`{"seq":%d,"session":"%s"}`, i, long)
			wantKey[ev] = strings.Repeat("é", 256)
			if i%12 == 8 { // Kinesis counts UTF-16 units: an emoji is two, and is not split
				ev = fmt.Sprintf(`{"seq":%d,"session":"a%s"}`, i, strings.Repeat("😀", 200))
				wantKey[ev] = "a" + strings.Repeat("😀", 127)
			}
		case 3:
			ev = fmt.Sprintf(`{"seq":%d,"session":"s\u0031"}`, i) // escaped: the key is the text, s1
			wantKey[ev] = "s1"
		default: // missing, empty or not a string: a random key
			ev = []string{`{"seq":%d}`, `{"seq":%d,"session":""}`}[i%2]
			ev = fmt.Sprintf(ev, i)
		}
		sent = append(sent, []byte(ev))
		s.Put([]byte(ev))
	}
	if err := closeWithin(t, s, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	got := k.ReadAll("events")
	seen := map[string]int{}
	shardOf := map[string]string{}
	lastSeq := map[string]int{}
	randomKeys := map[string]bool{}
	for _, r := range got {
		ev := string(r.Data)
		seen[ev]++
		want, keyed := wantKey[ev]
		switch {
		case keyed && r.Key != want:
			t.Errorf("record %s has key %q, want %q", ev, r.Key, want)
		case !keyed:
			randomKeys[r.Key] = true
		}
		if keyed {
			if sh, ok := shardOf[r.Key]; ok && sh != r.Shard {
				t.Errorf("key %q on shards %s and %s", r.Key, sh, r.Shard)
			}
			shardOf[r.Key] = r.Shard
			var seq int
			_, _ = fmt.Sscanf(ev[strings.Index(ev, `"seq":`)+6:], "%d", &seq)
			if prev, ok := lastSeq[r.Key]; ok && seq < prev {
				t.Errorf("key %q: seq %d after %d", r.Key, seq, prev)
			}
			lastSeq[r.Key] = seq
		}
	}
	for _, ev := range sent {
		if n := seen[string(ev)]; n != 1 {
			t.Errorf("%s read back %d times, want once", ev, n)
		}
	}
	if len(got) != len(sent) {
		t.Errorf("read %d records, put %d", len(got), len(sent))
	}
	if len(randomKeys) < 100 {
		t.Errorf("events without a key got only %d distinct keys", len(randomKeys))
	}
	st := s.Stats()
	if st.Put != uint64(len(sent)) || st.DroppedTotal != 0 || st.Failed != 0 || st.State != kinesis.OK {
		t.Errorf("Stats = %+v", st)
	}
}

// PutRecords answers 200 with some records failed: only those are sent
// again, after a backoff, until every event is accepted once.
func TestOnlyFailedRecordsAreResentAfterABackoff(t *testing.T) {
	f := kinesistest.NewFake(t)
	f.Decide(func(n int, c kinesistest.Call) kinesistest.Answer {
		if n < 3 { // the first three calls: the second and fourth records fail
			return kinesistest.Answer{FailCodes: map[int]string{1: "ProvisionedThroughputExceededException", 3: "InternalFailure"}}
		}
		return kinesistest.Answer{}
	})
	const minBackoff = 40 * time.Millisecond
	s, _ := newSink(t, f.URL, "events", func(o *kinesis.Options) {
		o.MinBackoff, o.MaxBackoff, o.FlushInterval, o.MaxInFlight = minBackoff, 200*time.Millisecond, time.Hour, 1
	})
	var sent []string
	for i := range 10 {
		ev := fmt.Sprintf(`{"n":%d}`, i)
		sent = append(sent, ev)
		s.Put([]byte(ev))
	}
	if err := closeWithin(t, s, 30*time.Second); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Call 0: ten records, the second and fourth fail; call 1: those two,
	// the second fails again; call 2: that one alone.
	calls := f.Calls()
	data := func(c kinesistest.Call) (out []string) {
		for _, e := range c.Records {
			out = append(out, string(e.Data))
		}
		return out
	}
	if len(calls) != 3 {
		t.Fatalf("%d calls, want 3", len(calls))
	}
	want := [][]string{sent, {sent[1], sent[3]}, {sent[3]}}
	for i, c := range calls {
		if fmt.Sprint(data(c)) != fmt.Sprint(want[i]) {
			t.Errorf("call %d sent %q, want %q", i, data(c), want[i])
		}
		// The jitter's floor is half the first backoff: never back to back.
		if gap := c.At.Sub(calls[max(i-1, 0)].At); i > 0 && gap < minBackoff/2 {
			t.Errorf("call %d came %s after a failed one, before the backoff", i, gap)
		}
	}
	accepted := map[string]int{}
	for _, e := range f.Accepted() {
		accepted[string(e.Data)]++
	}
	for _, ev := range sent {
		if accepted[ev] != 1 {
			t.Errorf("%s accepted %d times, want once", ev, accepted[ev])
		}
	}
	st := s.Stats()
	if st.FailedByCode["ProvisionedThroughputExceededException"] == 0 || st.FailedByCode["InternalFailure"] == 0 || st.Put != 10 {
		t.Errorf("Stats = %+v", st)
	}
}

// A stream that throttles every call: the buffer never grows past its
// bound, what does not fit is dropped and counted, the outage is logged
// once; when the stream accepts again, everything buffered goes through
// and the state is ok.
func TestThrottledStreamStaysWithinTheBufferThenRecovers(t *testing.T) {
	f := kinesistest.NewFake(t)
	var mu sync.Mutex
	throttle := true
	f.Decide(func(n int, c kinesistest.Call) kinesistest.Answer {
		mu.Lock()
		defer mu.Unlock()
		if !throttle {
			return kinesistest.Answer{}
		}
		if n%2 == 0 {
			return kinesistest.Answer{Status: http.StatusBadRequest, Code: "ProvisionedThroughputExceededException"}
		}
		return kinesistest.Answer{Status: http.StatusBadRequest, Code: "ThrottlingException"}
	})
	const limit = 1 << 20
	s, logs := newSink(t, f.URL, "events", func(o *kinesis.Options) { o.BufferBytes = limit })
	ev := []byte(`{"pad":"` + strings.Repeat("x", 1000) + `"}`)
	for range 3000 { // 3 MB: three times the buffer
		s.Put(ev)
		if b := s.Stats().BufferedBytes; b > limit {
			t.Fatalf("buffered %d bytes, over the %d bound", b, limit)
		}
	}
	waitStats(t, s, 30*time.Second, "state down", func(st kinesis.Stats) bool { return st.State == kinesis.Down })
	st := s.Stats()
	if st.Dropped[0] == 0 || st.Put != 0 || st.FailedByCode["ThrottlingException"] == 0 {
		t.Fatalf("Stats = %+v", st)
	}
	kept := 3000 - st.Dropped[0]
	if n := logs.Count("Kinesis buffer full"); n != 1 {
		t.Errorf("buffer full logged %d times, want once", n)
	}
	if n := logs.Count("Kinesis unreachable or refusing"); n != 1 {
		t.Errorf("outage logged %d times, want once", n)
	}
	mu.Lock()
	throttle = false
	mu.Unlock()
	waitStats(t, s, 30*time.Second, "everything buffered sent", func(st kinesis.Stats) bool { return st.Put == kept })
	waitStats(t, s, 10*time.Second, "state ok", func(st kinesis.Stats) bool { return st.State == kinesis.OK })
	s.Put(ev) // accepted again
	if err := closeWithin(t, s, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := len(f.Accepted()); uint64(got) != kept+1 {
		t.Errorf("stream accepted %d records, want %d", got, kept+1)
	}
	if n := logs.Count("Kinesis puts succeed again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
}

// Batches respect Kinesis' limits: at most 500 records and 5 MiB per call;
// an event of exactly 1 MiB with its key goes through, one byte more is
// dropped and counted; a call answered 500 is sent again (by the SDK's one
// retry) and nothing is accepted twice.
func TestBatchesStayWithinKinesisLimits(t *testing.T) {
	f := kinesistest.NewFake(t)
	f.Decide(func(n int, c kinesistest.Call) kinesistest.Answer {
		if n == 0 {
			return kinesistest.Answer{Status: http.StatusInternalServerError, Code: "InternalFailure"}
		}
		return kinesistest.Answer{}
	})
	s, _ := newSink(t, f.URL, "events", func(o *kinesis.Options) {
		o.KeyField, o.BufferBytes, o.FlushInterval, o.CallTimeout = "k", 64<<20, time.Hour, time.Minute // only full batches, then Close
	})
	big := func(size int) []byte { // {"k":"kk","p":"xxx…"}: size bytes, key "kk"
		head := `{"k":"kk","p":"`
		return []byte(head + strings.Repeat("x", size-len(head)-2) + `"}`)
	}
	exact, over := big(kinesis.MaxRecordBytes-2), big(kinesis.MaxRecordBytes-1)
	want := 0
	for i := range 1234 {
		s.Put(fmt.Appendf(nil, `{"i":%d}`, i))
		want++
		if i%200 == 0 {
			s.Put(exact)
			s.Put(over)
			want++
		}
	}
	if err := closeWithin(t, s, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, c := range f.Calls() {
		if len(c.Records) > kinesis.MaxBatchRecords || c.Bytes > kinesis.MaxBatchBytes {
			t.Errorf("call %d: %d records, %d bytes", i, len(c.Records), c.Bytes)
		}
	}
	if got := len(f.Accepted()); got != want {
		t.Errorf("accepted %d records, want %d", got, want)
	}
	if st := s.Stats(); st.Dropped[1] != 7 || st.Put != uint64(want) {
		t.Errorf("Stats = %+v, want 7 too large", st)
	}
	if c := f.Calls(); c[0].Status != http.StatusInternalServerError {
		t.Errorf("the first call was answered %d, not 500", c[0].Status)
	}
}

// At the shutdown deadline, what could not be sent is counted and Close
// says how many; Put after Close is dropped, never blocked.
func TestCloseCountsWhatWasNotSent(t *testing.T) {
	f := kinesistest.NewFake(t)
	f.Decide(func(int, kinesistest.Call) kinesistest.Answer {
		return kinesistest.Answer{Status: http.StatusBadRequest, Code: "ResourceNotFoundException"}
	})
	s, logs := newSink(t, f.URL, "events", nil)
	for i := range 5 {
		s.Put(fmt.Appendf(nil, `{"i":%d}`, i))
	}
	err := closeWithin(t, s, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "5 events not sent") {
		t.Fatalf("Close = %v, want 5 events not sent", err)
	}
	s.Put([]byte(`{"late":1}`))
	if st := s.Stats(); st.Dropped[3] != 6 || st.BufferedBytes != 0 {
		t.Errorf("Stats = %+v, want 6 dropped at shutdown", st)
	}
	if logs.Count(`"not_sent":5`) != 1 {
		t.Error("the count of events not sent is not logged")
	}
}

// Credentials that expire every second, from the ECS task-role endpoint the
// SDK reads (AWS_CONTAINER_CREDENTIALS_FULL_URI), and a stream that refuses
// a signature made with expired ones (ExpiredTokenException), or with one
// set in three before its time (clock skew, revocation): the SDK fetches
// new credentials, what was refused is resent, and every event is accepted
// once.
func TestExpiringCredentialsAreRenewed(t *testing.T) {
	f := kinesistest.NewFake(t)
	var mu sync.Mutex
	expiry := map[string]time.Time{} // access key → when the endpoint said it expires
	early := map[string]bool{}       // access keys the stream takes as expired at once
	issued := 0
	creds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		issued++
		key := fmt.Sprintf("AKIDROTATING%d", issued)
		exp := time.Now().Add(time.Second)
		expiry[key] = exp
		early[key] = issued%3 == 0
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"AccessKeyId":%q,"SecretAccessKey":"s","Token":"t","Expiration":%q}`, key, exp.UTC().Format(time.RFC3339Nano))
	}))
	t.Cleanup(creds.Close)
	f.Decide(func(n int, c kinesistest.Call) kinesistest.Answer {
		mu.Lock()
		defer mu.Unlock()
		if exp, ok := expiry[c.AccessKey]; !ok || early[c.AccessKey] || time.Now().After(exp) {
			return kinesistest.Answer{Status: http.StatusBadRequest, Code: "ExpiredTokenException"}
		}
		return kinesistest.Answer{}
	})
	kinesistest.Env(t, f.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "") // no static credentials: the container endpoint's
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", creds.URL+"/creds")
	client, err := kinesis.NewClient(context.Background(), "events", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	s, err := kinesis.New(kinesis.Options{Stream: "events", Client: client, FlushInterval: 20 * time.Millisecond,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n { // over about 4 s: several credential lifetimes
		s.Put(fmt.Appendf(nil, `{"i":%d}`, i))
		time.Sleep(100 * time.Millisecond)
	}
	if err := closeWithin(t, s, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, e := range f.Accepted() {
		got[string(e.Data)]++
	}
	for i := range n {
		if ev := fmt.Sprintf(`{"i":%d}`, i); got[ev] != 1 {
			t.Errorf("%s accepted %d times, want once", ev, got[ev])
		}
	}
	keys := map[string]bool{}
	for _, c := range f.Calls() {
		if c.Status == http.StatusOK {
			keys[c.AccessKey] = true
		}
	}
	if len(keys) < 2 {
		t.Errorf("calls accepted with %d credentials over 4 s of 1 s credentials", len(keys))
	}
	if s.Stats().FailedByCode["ExpiredTokenException"] == 0 {
		t.Error("no call was refused for expired credentials: the test did not test")
	}
}

// BenchmarkPut is what the publish path pays per event for forwarding: the
// partition key and the copy into the buffer, with the batching loop
// running beside it against a client that accepts every record at once
// (no SDK, no network: bench-kinesis.sh measures the whole).
func BenchmarkPut(b *testing.B) {
	for _, field := range []string{"", "session_id"} {
		b.Run("key="+map[string]string{"": "random", "session_id": "field"}[field], func(b *testing.B) {
			s, err := kinesis.New(kinesis.Options{Stream: "events", Client: instantClient{}, KeyField: field, BufferBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			ev := []byte(`{"event_name":"START","session_id":"6f1c2d3e-4b5a-6978-8a9b-0c1d2e3f4a5b","data":{"position":12.5,"url":"https://example.org/video/1234"},"user_ip":"203.0.113.7"}`)
			b.SetBytes(int64(len(ev)))
			b.ReportAllocs()
			for b.Loop() {
				s.Put(ev)
			}
			b.StopTimer()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = s.Close(ctx)
		})
	}
}

// instantClient accepts every record at once.
type instantClient struct{}

func (instantClient) PutRecords(_ context.Context, in *awskinesis.PutRecordsInput, _ ...func(*awskinesis.Options)) (*awskinesis.PutRecordsOutput, error) {
	return &awskinesis.PutRecordsOutput{Records: make([]types.PutRecordsResultEntry, len(in.Records))}, nil
}
