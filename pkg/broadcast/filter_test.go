package broadcast

import (
	"fmt"
	"strings"
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
			for _, ev := range []string{ev, widened(ev)} {
				if got := NewFilter(tc.terms...).keeps(newFrame([]byte(ev))); got != tc.want {
					t.Errorf("keeps = %v, want %v, on %.40s…", got, tc.want, ev)
				}
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
		for _, ev := range []string{tc.ev, widened(tc.ev)} {
			if got := NewFilter(Term{"k", []string{"b"}}).keeps(newFrame([]byte(ev))); got != tc.want {
				t.Errorf("%s: keeps = %v, want %v", ev, got, tc.want)
			}
		}
	}
}

// widened is ev with maxKeptMembers filler members in front, so that its
// members are indexed rather than kept decoded with the frame.
func widened(ev string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range maxKeptMembers {
		fmt.Fprintf(&b, `"pad%d":%d,`, i, i)
	}
	return b.String() + ev[1:]
}

// TestFilterWideEventIndexedWithinItsSize: an event of many tiny top-level
// members, as wide as a body may be, keeps with its frame an index no
// larger than itself (kept decoded, its members took about ten times its
// size, for each of the thousands of events the frame ring holds). Looking
// a name up in it, present or absent, allocates nothing: it is a probe,
// not a scan.
func TestFilterWideEventIndexedWithinItsSize(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"session_id":"s1"`)
	for i := 0; b.Len() < 64<<10-16; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&b, `,"%d":1`, i%10)
		} else {
			b.WriteString(`,"":1`) // the shortest member there is
		}
	}
	b.WriteString(`,"event_name":"START"}`)
	fr := newFrame([]byte(b.String()))
	if !NewFilter(Term{"event_name", []string{"START"}}, Term{"session_id", []string{"s1"}}).keeps(fr) {
		t.Fatal("the wide event does not pass its own filter")
	}
	if NewFilter(Term{"session_id", []string{"s2"}}).keeps(fr) {
		t.Fatal("the wide event passes another session's filter")
	}
	for i := range 2 * maxKeptMembers { // fields it lacks, as hostile listeners would ask
		if NewFilter(Term{fmt.Sprint("absent", i), []string{"x"}}).keeps(fr) {
			t.Fatalf("absent field %d matched", i)
		}
	}
	if !NewFilter(Term{"8", []string{"1"}}).keeps(fr) || !NewFilter(Term{"", []string{"1"}}).keeps(fr) {
		t.Error("a duplicated field is not found")
	}
	ff := &fr.fields
	if size := 4 * cap(ff.index); ff.members != nil || size > len(fr.json())+4 {
		t.Errorf("a %d-byte event of thousands of members keeps a %d-byte index and %d members with its frame, want at most its size and none",
			len(fr.json()), size, len(ff.members))
	}
	absent := NewFilter(Term{"absent", []string{"x"}})
	present := NewFilter(Term{"session_id", []string{"s1"}})
	if n := testing.AllocsPerRun(100, func() { absent.keeps(fr); present.keeps(fr) }); n != 0 {
		t.Errorf("a lookup in a wide event allocates %v times", n)
	}
}

// A wide event's long names and values cost a filtered listener no more
// than its own filter's values: a literal longer than any of them does not
// match, without being read to its end.
func TestFilterWideEventLongLiterals(t *testing.T) {
	long := strings.Repeat("x", 30000)
	ev := widened(`{"big":"` + long + `","num":` + strings.Repeat("1", 3000) + `,"` + long + `":"v","esc":"\u00e9\u00e9"}`)
	fr := newFrame([]byte(ev))
	for _, tc := range []struct {
		term Term
		want bool
	}{
		{Term{"big", []string{"x"}}, false},
		{Term{"big", []string{long}}, true},
		{Term{"num", []string{"1"}}, false},
		{Term{"num", []string{strings.Repeat("1", 3000)}}, true},
		{Term{long[:10], []string{"v"}}, false},
		{Term{long, []string{"v"}}, true},
		{Term{"esc", []string{"éé"}}, true},
		{Term{"esc", []string{"é"}}, false},
	} {
		if got := NewFilter(tc.term).keeps(fr); got != tc.want {
			t.Errorf("%.20s=%.20s: keeps = %v, want %v", tc.term.Field, tc.term.Values[0], got, tc.want)
		}
	}
}

// Many values: looked up in a set, same answers.
func TestFilterManyValues(t *testing.T) {
	values := make([]string, 256)
	for i := range values {
		values[i] = fmt.Sprint("v", i)
	}
	for _, ev := range []string{`{"k":"v200"}`, widened(`{"k":"v200"}`)} {
		if !NewFilter(Term{"k", values}).keeps(newFrame([]byte(ev))) {
			t.Errorf("%.30s: the 201st of 256 values does not match", ev)
		}
		if NewFilter(Term{"k", values[:200]}).keeps(newFrame([]byte(ev))) {
			t.Errorf("%.30s: matched a value not listed", ev)
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
