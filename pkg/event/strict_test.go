package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// strictRejects are valid JSON objects that strict consumers cannot
// decode: Compact refuses them, CompactLenient passes them through.
var strictRejects = []struct {
	name string
	in   string
	want error
}{
	{"huge exponent", `{"n":1e999999}`, ErrRange},
	{"negative beyond range", `{"n":-1e400}`, ErrRange},
	{"just above the largest double", `{"n":1.8e308}`, ErrRange},
	{"upper-case exponent with sign, nested", `{"a":[1,{"n":2E+309}]}`, ErrRange},
	{"309 digits without exponent", `{"n":` + strings.Repeat("9", 309) + `}`, ErrRange},
	{"lone high surrogate", `{"s":"\ud800"}`, ErrSurrogate},
	{"lone low surrogate", `{"s":"\udc00"}`, ErrSurrogate},
	{"upper-case hex", `{"s":"x\uDBFF"}`, ErrSurrogate},
	{"high surrogate then a non-surrogate escape", `{"s":"\ud800\u0041"}`, ErrSurrogate},
	{"two high surrogates", `{"s":"\ud83d\ud83d"}`, ErrSurrogate},
	{"high surrogate then a character", `{"s":"\ud83dx"}`, ErrSurrogate},
	{"high surrogate then another escape", `{"s":"\ud83d\n"}`, ErrSurrogate},
	{"reversed pair", `{"s":"\ude00\ud83d"}`, ErrSurrogate},
	{"lone surrogate after escaped backslash", `{"s":"a\\\ud800"}`, ErrSurrogate},
	{"lone surrogate after an escaped quote", `{"s":"\"\udfff"}`, ErrSurrogate},
	{"lone surrogate in a key", `{"\ud800":1}`, ErrSurrogate},
	{"lone surrogate in a nested key", `{"a":{"ok":"\ud83d\ude00","\udc01k":2}}`, ErrSurrogate},
	{"lone surrogate in an array", `{"a":["x","\ud800"]}`, ErrSurrogate},
	{"range error after many escapes", `{"s":"` + strings.Repeat(`\n\"`, 100) + `","n":1e400}`, ErrRange},
}

// strictAccepts are I-JSON: both modes pass them byte for byte.
var strictAccepts = []string{
	`{"n":12345678901234567890}`,
	`{"n":123456789012345678901234567890,"m":-9007199254740993}`,
	`{"n":1.7976931348623157e308,"m":-1.7976931348623157E+308}`,
	`{"n":1e-400,"m":-4.9e-325}`, // underflow loses precision, not range
	`{"n":0.1000000000000000055511151231257827021181583404541015625}`,
	`{"n":` + strings.Repeat("9", 308) + `}`,
	`{"n":0.` + strings.Repeat("0", 400) + `1}`,
	`{"n":-0.0e-0,"m":0E0,"k":1e+0}`,
	`{"t":true,"f":false,"z":null,"e":[1e1,2E2]}`,
	`{"s":"\ud83d\ude00","S":"\uD83C\uDFAC"}`,
	`{"s":"\\ud800"}`, // an escaped backslash, then plain text
	`{"s":"\"\ud83d\ude00\"","e":"1e999999"}`,
	`{"\u00e9":"\uffff\u0000\ue000\ud7ff"}`,
	`{"s":"` + strings.Repeat(`\\\"`, 50) + `\ud800\udc00"}`,
	`{}`,
}

func TestStrictRefusesWhatStrictConsumersCannotDecode(t *testing.T) {
	for _, tc := range strictRejects {
		t.Run(tc.name, func(t *testing.T) {
			if !json.Valid([]byte(tc.in)) {
				t.Fatalf("case is not valid JSON: %q", tc.in)
			}
			for _, field := range []string{"", "user_ip"} {
				out, err := Compact([]byte("p"), []byte(tc.in), field, "192.0.2.1")
				if err != tc.want || string(out) != "p" {
					t.Errorf("Compact(%q, %q) = %q, %v; want %v", tc.in, field, out, err, tc.want)
				}
			}
			out, err := CompactLenient(nil, []byte(tc.in), "", "")
			if err != nil || string(out) != stdCompact(t, []byte(tc.in)) {
				t.Errorf("CompactLenient = %q, %v; want it unchanged", out, err)
			}
		})
	}
}

func TestStrictPassesIJSONByteForByte(t *testing.T) {
	for _, in := range strictAccepts {
		for _, f := range []func([]byte, []byte, string, string) ([]byte, error){Compact, CompactLenient} {
			pretty := strings.ReplaceAll(strings.ReplaceAll(in, `{"`, "{\n  \""), `,"`, ",\n  \"")
			out, err := f(nil, []byte(pretty), "", "")
			if err != nil || string(out) != in {
				t.Errorf("%.80q: got %.80q, %v", in, out, err)
			}
		}
	}
}

// Every real player message is I-JSON.
func TestStrictAcceptsFixtures(t *testing.T) {
	for name, body := range allFixtures(t) {
		if name == invalidFixture {
			continue
		}
		strict, err := Compact(nil, body, "user_ip", "192.0.2.1")
		lenient, _ := CompactLenient(nil, body, "user_ip", "192.0.2.1")
		if err != nil || !bytes.Equal(strict, lenient) {
			t.Errorf("%s: strict %v, or output differs from lenient", name, err)
		}
	}
}

// A body of many escapes is checked in one pass, not once per escape.
func BenchmarkStrictEscapes(b *testing.B) {
	body := []byte(`{"s":"` + strings.Repeat(`\n`, 30000) + `"}`)
	b.SetBytes(int64(len(body)))
	dst := make([]byte, 0, len(body))
	for b.Loop() {
		if _, err := Compact(dst[:0], body, "", ""); err != nil {
			b.Fatal(err)
		}
	}
}

// Check holds an event received already compacted to the rules Compact
// applies to a body: what ingest refuses, the relay refuses.
func TestCheckAppliesIngestRules(t *testing.T) {
	for _, tc := range []struct {
		obj           string
		strict, loose error
	}{
		{`{"a":1}`, nil, nil},
		{"{\"a\":\"\xff\"}", ErrUTF8, ErrUTF8},
		{`{"a":"\ud800"}`, ErrSurrogate, nil},
		{`{"a":1e400}`, ErrRange, nil},
		{`[1]`, ErrNotObject, ErrNotObject},
		{`{"a":1}{}`, ErrSyntax, ErrSyntax},
		{``, ErrEmpty, ErrEmpty},
	} {
		for strict, want := range map[bool]error{true: tc.strict, false: tc.loose} {
			if err := Check([]byte(tc.obj), strict); err != want {
				t.Errorf("Check(%q, strict=%v) = %v, want %v", tc.obj, strict, err, want)
			}
			_, cerr := compactMode([]byte(tc.obj), strict)
			if (cerr == nil) != (want == nil) {
				t.Errorf("%q strict=%v: Compact says %v, Check %v", tc.obj, strict, cerr, want)
			}
		}
	}
}

func compactMode(body []byte, strict bool) ([]byte, error) {
	if strict {
		return Compact(nil, body, "", "")
	}
	return CompactLenient(nil, body, "", "")
}
