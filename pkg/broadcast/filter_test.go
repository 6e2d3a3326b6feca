package broadcast

import (
	"fmt"
	"testing"
)

func TestFilterKeeps(t *testing.T) {
	const ev = `{"data":{"session_id":"nested","n":1},"event_name":"START","session_id":"s1",` +
		`"timestamp":1723640597805,"version":1.0,"live":false,"esc":"a\"b\u00e9","nothing":null,"list":["x"]}`
	for _, tc := range []struct {
		terms []Term
		want  bool
	}{
		{nil, true},
		{[]Term{{"event_name", []string{"START"}}}, true},
		{[]Term{{"event_name", []string{"ERROR", "START"}}}, true},
		{[]Term{{"event_name", []string{"ERROR"}}}, false},
		{[]Term{{"event_name", []string{"start"}}}, false},                   // exact, case included
		{[]Term{{"event_name", []string{`"START"`}}}, false},                 // strings compare without quotes
		{[]Term{{"timestamp", []string{"1723640597805"}}}, true},             // number literal
		{[]Term{{"version", []string{"1.0"}}}, true},                         // the literal, not the value
		{[]Term{{"version", []string{"1"}}}, false},                          // ... so 1 is not 1.0
		{[]Term{{"live", []string{"false"}}}, true},                          // bool
		{[]Term{{"live", []string{"true"}}}, false},                          //
		{[]Term{{"esc", []string{"a\"bé"}}}, true},                           // escapes decoded
		{[]Term{{"nothing", []string{"null"}}}, false},                       // null is no literal
		{[]Term{{"list", []string{`["x"]`}}}, false},                         // nor an array
		{[]Term{{"data", []string{`{"session_id":"nested","n":1}`}}}, false}, // nor an object
		{[]Term{{"n", []string{"1"}}}, false},                                // top-level only
		{[]Term{{"unknown", []string{"x"}}}, false},                          // absent field
		{[]Term{{"event_name", []string{"START"}}, {"session_id", []string{"s1"}}}, true},
		{[]Term{{"event_name", []string{"START"}}, {"session_id", []string{"nested"}}}, false}, // AND
	} {
		t.Run(fmt.Sprint(tc.terms), func(t *testing.T) {
			if got := NewFilter(tc.terms...).keeps(newFrame([]byte(ev))); got != tc.want {
				t.Errorf("keeps = %v, want %v", got, tc.want)
			}
		})
	}
}

// With duplicate keys the last member counts, as in JSON.parse and
// encoding/json, even when it is not a literal. Keys are compared decoded.
func TestFilterDuplicateKeys(t *testing.T) {
	for _, tc := range []struct {
		ev   string
		want bool
	}{
		{`{"k":"a","k":"b"}`, true},
		{`{"k":"b","k":"a"}`, false},
		{`{"k":"b","k":{}}`, false},
		{`{"k\u0041":"b"}`, false}, // the key is kA, not k
		{`{"\u006b":"b"}`, true},   // an escaped key is compared decoded
	} {
		if got := NewFilter(Term{"k", []string{"b"}}).keeps(newFrame([]byte(tc.ev))); got != tc.want {
			t.Errorf("%s: keeps = %v, want %v", tc.ev, got, tc.want)
		}
	}
}

// BenchmarkFilter splits what filtering costs: reading the event's
// top-level fields, once per event (extract), and one filtered listener's
// check against them (keeps), which every filtered listener does.
func BenchmarkFilter(b *testing.B) {
	ev := benchEvent(b)
	b.Run("extract", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fr := newFrame(ev)
			fr.fields.get(fr.json())
		}
	})
	fr := newFrame(ev)
	for _, c := range []struct {
		name string
		f    *Filter
	}{
		{"keeps/session_id-miss", NewFilter(Term{"session_id", []string{"s42"}})},
		{"keeps/event_name-match", NewFilter(Term{"event_name", []string{"ERROR", "START"}})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.f.keeps(fr)
			}
		})
	}
}
