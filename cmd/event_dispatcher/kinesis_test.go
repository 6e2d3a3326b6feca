package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/brokertest"
	"event-dispatcher/internal/kinesistest"
	"event-dispatcher/internal/ssetest"
)

type kinesisHealth struct {
	Status   string `json:"status"`
	Kinesis  string `json:"kinesis"`
	Put      uint64 `json:"kinesis_put"`
	Dropped  uint64 `json:"kinesis_dropped"`
	Buffered int64  `json:"kinesis_buffered_bytes"`
	Limit    int64  `json:"kinesis_buffer_limit"`
}

func (r *replica) kinesis(t *testing.T) kinesisHealth {
	t.Helper()
	var h kinesisHealth
	if err := json.Unmarshal([]byte(get(t, r.base+"/health")), &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// Two replicas linked by a broker forward to Kinesis, which is down when
// they start, comes up, is killed mid-run and comes back empty: POSTs stay
// 204, every listener gets every event, the buffer never passes its
// bound, and forwarding resumes by itself. Each event accepted is read
// back from the stream once, byte for byte as listeners got it, with its
// partition key, put by the replica that accepted it only.
func TestKinesisForwardingThroughOutages(t *testing.T) {
	k := kinesistest.Start(t)
	k.Kill() // down at start
	kinesistest.Env(t, k.Endpoint)
	redis := brokertest.Redis(t)
	const limit = 1 << 20
	reps := startReplicas(t, 2, "BROKER_URL="+redis.URL, "KINESIS_STREAM_NAME=events",
		"KINESIS_PARTITION_KEY_FIELD=p", "KINESIS_FLUSH_INTERVAL=20ms", fmt.Sprintf("KINESIS_BUFFER_BYTES=%d", limit))
	waitBroker(t, reps, "connected", 10*time.Second)
	listeners := []*collector{collect(t, http.DefaultClient, reps[0].base), collect(t, http.DefaultClient, reps[1].base)}

	posted := map[string]bool{}
	post := func(from, to int, pad int) {
		t.Helper()
		for seq := from; seq < to; seq++ {
			r := seq % 2
			b := fmt.Sprintf(`{"r":%d,"p":%d,"seq":%d,"pad":"%s"}`, r, seq%5, seq, strings.Repeat("x", pad))
			resp, err := http.Post(reps[r].base+"/api/events", "application/json", strings.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("POST %d: %d", seq, resp.StatusCode)
			}
			posted[strings.TrimSuffix(b, "}")+`,"user_ip":"127.0.0.1"}`] = true
		}
	}
	everyListenerHas := func(n int) {
		t.Helper()
		for i, l := range listeners {
			ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("listener %d has %d events", i, n), func() (bool, string) {
				return len(l.lines()) == n, fmt.Sprint(len(l.lines()))
			})
		}
	}
	put := func() (n, dropped uint64) {
		for _, r := range reps {
			h := r.kinesis(t)
			if h.Buffered > h.Limit || h.Limit != limit {
				t.Fatalf("buffered %d bytes, bound %d", h.Buffered, h.Limit)
			}
			n, dropped = n+h.Put, dropped+h.Dropped
		}
		return n, dropped
	}
	down := func() { // every replica has seen the outage: it is logged once each
		t.Helper()
		for i, r := range reps {
			ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("replica %d: kinesis down", i), func() (bool, string) {
				h := r.kinesis(t)
				return h.Kinesis == "down" && h.Status == "ok", fmt.Sprintf("%+v", h)
			})
		}
	}
	readBack := func(want int) {
		t.Helper()
		var got []kinesistest.Record
		ssetest.Eventually(t, 30*time.Second, fmt.Sprintf("%d records in the stream", want), func() (bool, string) {
			got = k.ReadAll("events")
			return len(got) >= want, fmt.Sprint(len(got))
		})
		seen := map[string]bool{}
		for _, rec := range got {
			ev := string(rec.Data)
			if !posted[ev] || seen[ev] {
				t.Fatalf("record %q: posted %v, seen before %v", ev, posted[ev], seen[ev])
			}
			seen[ev] = true
			var e struct{ P int }
			if err := json.Unmarshal(rec.Data, &e); err != nil || rec.Key != fmt.Sprint(e.P) {
				t.Errorf("record %s has key %q", ev, rec.Key)
			}
		}
		if len(got) != want {
			t.Errorf("%d records, want %d", len(got), want)
		}
	}

	// Down at start: accepted and delivered all the same.
	post(0, 100, 10)
	everyListenerHas(100)
	down()
	// Up: the buffered events go, and new ones follow.
	k.Restart()
	k.CreateStream("events", 2)
	post(100, 200, 10)
	everyListenerHas(200)
	ssetest.Eventually(t, 30*time.Second, "200 events put", func() (bool, string) {
		n, d := put()
		return n == 200 && d == 0, fmt.Sprint(n, d)
	})
	readBack(200)

	// Killed mid-run with more waiting than the buffer holds: the excess
	// is dropped and counted, the rest goes once the stream is back.
	k.Kill()
	post(200, 500, 10000) // 1.5 MB for each 1 MiB buffer
	everyListenerHas(500)
	_, _ = put() // checks the bound
	down()
	k.Restart()
	k.CreateStream("events", 1) // a new, empty stream
	var sent, dropped uint64
	ssetest.Eventually(t, 60*time.Second, "every event put or dropped", func() (bool, string) {
		sent, dropped = put()
		return sent+dropped == 500, fmt.Sprint(sent, dropped)
	})
	if dropped == 0 {
		t.Error("3 MB for two 1 MiB buffers, and nothing dropped")
	}
	readBack(int(sent - 200))
	for i, r := range reps {
		if h := r.kinesis(t); h.Kinesis != "ok" {
			t.Errorf("replica %d: kinesis %s after recovery", i, h.Kinesis)
		}
		if n := strings.Count(r.logs.String(), "Kinesis unreachable or refusing"); n != 2 {
			t.Errorf("replica %d logged %d outages, want 2", i, n)
		}
	}
}
