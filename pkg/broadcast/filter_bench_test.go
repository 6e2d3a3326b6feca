package broadcast

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// BenchmarkFilteredFanout is the cost bound of filters: one wide event
// (5,201 top-level fields, 61 KB, as a hostile publisher would shape it)
// fanned out to 300 listeners, unfiltered, or each filtering on 16 fields
// no other listener asks for (4,800 distinct names), all present so that
// every term is evaluated and every listener receives the event. Compare
// ns/op of filters=distinct16 with filters=none: the ratio is what
// filtering costs per event, whatever the event's width.
func BenchmarkFilteredFanout(b *testing.B) {
	const listeners, terms, fields = 300, 16, 5201
	var ev strings.Builder
	ev.WriteString("{")
	for i := range fields {
		if i > 0 {
			ev.WriteString(",")
		}
		fmt.Fprintf(&ev, `"f%d":%d`, i, i%10)
	}
	ev.WriteString("}")
	wide := []byte(ev.String())
	for _, c := range []struct {
		name   string
		filter func(i int) *Filter
	}{
		{"filters=none", func(int) *Filter { return nil }},
		{"filters=distinct16", func(i int) *Filter {
			t := make([]Term, terms)
			for j := range t {
				n := i*terms + j
				t[j] = Term{Field: fmt.Sprint("f", n), Values: []string{fmt.Sprint(n % 10)}}
			}
			return NewFilter(t...)
		}},
	} {
		b.Run(fmt.Sprintf("event=%dfields/listeners=%d/%s", fields, listeners, c.name), func(b *testing.B) {
			var ready, served sync.WaitGroup
			b.Cleanup(served.Wait)
			hub := benchHub(b, listeners)
			arrivals := newBenchArrivals(listeners)
			ready.Add(listeners)
			for i := range listeners {
				sink := &benchSink{header: http.Header{}, ready: &ready, arrivals: arrivals}
				req := httptest.NewRequest(http.MethodGet, "/events", nil)
				f := c.filter(i)
				served.Go(func() { _, _ = hub.ServeFiltered(sink, req, f) })
			}
			ready.Wait()
			b.ReportAllocs()
			for b.Loop() {
				if err := hub.Publish(wide); err != nil {
					b.Fatal(err)
				}
				<-arrivals.done
			}
		})
	}
}

// BenchmarkNewFilterMaximal is what a listener's largest filter holds
// beyond its values' own bytes (B/op): 16 fields of 16 values each (256,
// the most the server accepts), every value 75 bytes, so the query fills
// the ~20 KiB a request head may take.
func BenchmarkNewFilterMaximal(b *testing.B) {
	terms := make([]Term, 16)
	for i := range terms {
		terms[i].Field = fmt.Sprint("field", i)
		for j := range 16 {
			terms[i].Values = append(terms[i].Values, fmt.Sprintf("%075d", i*16+j))
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		NewFilter(terms...)
	}
}
