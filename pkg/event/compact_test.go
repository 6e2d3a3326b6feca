package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"event-dispatcher/pkg/fixtures"
)

// invalidFixture is published with a trailing comma and must be refused.
const invalidFixture = fixtures.Invalid

// allFixtures returns every real player message by file name.
func allFixtures(tb testing.TB) map[string][]byte {
	tb.Helper()
	out := map[string][]byte{}
	for _, name := range fixtures.Names() {
		b, err := fixtures.Get(name)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = b
	}
	return out
}

// stdCompact is the reference: what encoding/json makes of body.
func stdCompact(tb testing.TB, body []byte) string {
	tb.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil {
		tb.Fatalf("reference compaction failed: %v", err)
	}
	return b.String()
}

// member is one top-level member: decoded key, raw value.
type member struct{ key, val string }

// topLevel lists the members of the JSON object data in order, duplicates
// included, which a map-based decode would hide.
func topLevel(tb testing.TB, data []byte) []member {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		tb.Fatalf("not an object: %q (%v)", data, err)
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			tb.Fatalf("reading key of %q: %v", data, err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			tb.Fatalf("reading value of %q: %v", data, err)
		}
		out = append(out, member{tok.(string), string(raw)})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		tb.Fatalf("object not closed: %q (%v)", data, err)
	}
	return out
}

// checkOutput asserts what holds for every accepted event: valid JSON, valid
// UTF-8, and a single line, since SSE would split a data line at CR or LF.
func checkOutput(tb testing.TB, out []byte) {
	tb.Helper()
	if !json.Valid(out) {
		tb.Errorf("output is not valid JSON: %q", out)
	}
	if !utf8.Valid(out) {
		tb.Errorf("output is not valid UTF-8: %q", out)
	}
	if bytes.ContainsAny(out, "\r\n") {
		tb.Errorf("output spans several lines: %q", out)
	}
}

func TestCompactAcceptsFixtures(t *testing.T) {
	for name, body := range allFixtures(t) {
		if name == invalidFixture {
			continue
		}
		t.Run(name, func(t *testing.T) {
			orig := bytes.Clone(body)
			out, err := Compact(nil, body, "", "")
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if want := stdCompact(t, body); string(out) != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
			checkOutput(t, out)
			if !bytes.Equal(body, orig) {
				t.Error("Compact modified its input")
			}
		})
	}
}

// The fixture README states the compact size of the Apple START event.
func TestCompactStartFixtureSize(t *testing.T) {
	out, err := Compact(nil, allFixtures(t)["start.json"], "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 767 {
		t.Errorf("compact start.json is %d bytes, want 767", len(out))
	}
}

func TestCompactAccepts(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty object", `{}`, `{}`},
		{"empty object with space", "{ \t\r\n}", `{}`},
		{"empty key", `{"":1}`, `{"":1}`},
		{"already compact", `{"a":1,"b":"x"}`, `{"a":1,"b":"x"}`},
		{"key order kept", `{"z":1,"a":2,"m":3}`, `{"z":1,"a":2,"m":3}`},
		{"duplicate keys kept", `{"a":1,"b":2,"a":3}`, `{"a":1,"b":2,"a":3}`},
		{"number literals kept", `{"a":1.0,"b":1e300,"c":-0,"d":1E+2,"e":123456789012345678901234567890,"f":0.1000,"g":-0.0e-0}`,
			`{"a":1.0,"b":1e300,"c":-0,"d":1E+2,"e":123456789012345678901234567890,"f":0.1000,"g":-0.0e-0}`},
		{"literals", `{ "t" : true , "f" : false , "n" : null }`, `{"t":true,"f":false,"n":null}`},
		{"nested", `{"a":{"b":{"c":[{"d":[[],{}]}]}},"e":[1,[2,[3]]]}`, `{"a":{"b":{"c":[{"d":[[],{}]}]}},"e":[1,[2,[3]]]}`},
		{"unicode raw", `{"é":"日本語 🎬","ключ":"значение"}`, `{"é":"日本語 🎬","ключ":"значение"}`},
		{"unicode escapes kept", `{"s":"\u00e9\ud83c\udfac\u0000"}`, `{"s":"\u00e9\ud83c\udfac\u0000"}`},
		{"line separators kept", "{\"a\":\"\u2028\u2029\",\"b\":\"\\u2028\"}", "{\"a\":\"\u2028\u2029\",\"b\":\"\\u2028\"}"},
		{"escapes kept", `{"q":"a\"b\\c\/d\n\r\t\b\f"}`, `{"q":"a\"b\\c\/d\n\r\t\b\f"}`},
		{"html not escaped", `{"h":"<a href='x'>&</a>"}`, `{"h":"<a href='x'>&</a>"}`},
		{"structural characters in strings", `{"a":"},{\"","b":"[ , : ]"}`, `{"a":"},{\"","b":"[ , : ]"}`},
		{"spaces inside strings kept", `{ "a b" : " c  d " }`, `{"a b":" c  d "}`},
		{"leading and trailing whitespace", " \t\r\n{\"a\":1}\r\n \t", `{"a":1}`},
		{"whitespace everywhere", "{\n  \"a\" : [ 1 , 2 ] ,\n\t\"b\" : { }\r\n}\n", `{"a":[1,2],"b":{}}`},
		{"pretty printed", "{\n    \"session_id\": \"1\",\n    \"data\": {\n        \"x\": [\n            1,\n            2\n        ]\n    }\n}\n",
			`{"session_id":"1","data":{"x":[1,2]}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Compact(nil, []byte(tc.in), "", "")
			if err != nil {
				t.Fatalf("rejected %q: %v", tc.in, err)
			}
			if string(out) != tc.want {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
			checkOutput(t, out)
		})
	}
}

// rejectCases are bodies Compact must refuse, with the exact error.
var rejectCases = []struct {
	name string
	in   string
	want error
}{
	{"empty", "", ErrEmpty},
	{"whitespace only", " \t\r\n ", ErrEmpty},
	{"array", `[{"a":1}]`, ErrNotObject},
	{"empty array", ` [] `, ErrNotObject},
	{"string", `"{}"`, ErrNotObject},
	{"number", `42`, ErrNotObject},
	{"negative number", `-1.5e3`, ErrNotObject},
	{"true", `true`, ErrNotObject},
	{"false", `false`, ErrNotObject},
	{"null", "\nnull\n", ErrNotObject},
	{"trailing garbage", `{"a":1} x`, ErrSyntax},
	{"trailing bracket", `{"a":1}]`, ErrSyntax},
	{"two objects", `{"a":1}{"b":2}`, ErrSyntax},
	{"two objects on two lines", "{\"a\":1}\n{\"b\":2}\n", ErrSyntax},
	{"array then garbage", `[1] x`, ErrSyntax},
	{"truncated after colon", `{"a":`, ErrSyntax},
	{"truncated in string", `{"a":"bc`, ErrSyntax},
	{"truncated nested", `{"a":{"b":[1,2`, ErrSyntax},
	{"open brace only", `{`, ErrSyntax},
	{"trailing comma", `{"a":1,}`, ErrSyntax},
	{"trailing comma in array", `{"a":[1,]}`, ErrSyntax},
	{"missing value", `{"a"}`, ErrSyntax},
	{"single quotes", `{'a':1}`, ErrSyntax},
	{"bare key", `{a:1}`, ErrSyntax},
	{"leading zero", `{"a":01}`, ErrSyntax},
	{"NaN", `{"a":NaN}`, ErrSyntax},
	{"invalid escape", `{"a":"\q"}`, ErrSyntax},
	{"raw newline in string", "{\"a\":\"x\ny\"}", ErrSyntax},
	{"raw control character in string", "{\"a\":\"\x01\"}", ErrSyntax},
	{"NUL after object", "{\"a\":1}\x00", ErrSyntax},
	{"byte order mark", "\xef\xbb\xbf{}", ErrSyntax},
	{"bare word", `nul`, ErrSyntax},
	{"invalid UTF-8 in value", "{\"a\":\"\xff\"}", ErrUTF8},
	{"invalid UTF-8 in key", "{\"\xfe\":1}", ErrUTF8},
	{"truncated UTF-8 sequence", "{\"a\":\"\xc3\"}", ErrUTF8},
	{"overlong UTF-8", "{\"a\":\"\xc0\xaf\"}", ErrUTF8},
	{"UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", ErrUTF8},
	{"invalid UTF-8 between members", "{\"a\":1,\xff\"b\":2}", ErrUTF8},
	{"invalid UTF-8 after object", "{\"a\":1}\xff", ErrUTF8},
}

func TestCompactRejects(t *testing.T) {
	cases := rejectCases
	cases = append(cases, struct {
		name string
		in   string
		want error
	}{invalidFixture, string(allFixtures(t)[invalidFixture]), ErrSyntax})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("prefix")
			out, err := Compact(dst, []byte(tc.in), "user_ip", "203.0.113.7")
			// Identity, not errors.Is: a wrapped error could carry the body.
			if err != tc.want {
				t.Fatalf("Compact(%q) error = %v, want %v", tc.in, err, tc.want)
			}
			if string(out) != "prefix" {
				t.Errorf("on error dst became %q, want it unchanged", out)
			}
			if body := strings.TrimSpace(tc.in); len(body) > 3 && strings.Contains(err.Error(), body) {
				t.Errorf("error %q contains the body", err)
			}
		})
	}
}

// A client must never see its own body echoed back, whatever went wrong.
func TestCompactErrorNeverContainsBody(t *testing.T) {
	const secret = "s3cr3t-t0k3n"
	bodies := []string{
		`["` + secret + `"]`,
		`"` + secret + `"`,
		`{"token":"` + secret + `"} trailing`,
		`{"token":"` + secret + `",}`,
		`{"token":"` + secret + "\xff\"}",
		`{"token":"` + secret,
	}
	for _, b := range bodies {
		for _, field := range []string{"", "user_ip"} {
			_, err := Compact(nil, []byte(b), field, "192.0.2.1")
			if err == nil {
				t.Fatalf("accepted %q", b)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error for %q contains the body: %q", b, err)
			}
		}
	}
}

func TestCompactAppendsToDst(t *testing.T) {
	body := []byte("{ \"a\" : 1 ,\n \"user_ip\" : \"x\" }")
	for _, field := range []string{"", "user_ip"} {
		want := `data: {"a":1,"user_ip":"x"}`
		if field != "" {
			want = `data: {"a":1,"user_ip":"192.0.2.1"}`
		}
		// Exact capacity forces a reallocation; spare capacity full of
		// garbage checks that only the appended part is written.
		exact := []byte("data: ")
		spare := append(make([]byte, 0, 256), "data: "...)
		spare = append(spare, strings.Repeat("#", 200)...)[:len("data: ")]
		for _, dst := range [][]byte{exact, spare} {
			out, err := Compact(dst, body, field, "192.0.2.1")
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != want {
				t.Errorf("field %q: got %q, want %q", field, out, want)
			}
		}
	}
}

func TestCompactClientIPField(t *testing.T) {
	const ip = "203.0.113.7"
	cases := []struct{ name, in, want string }{
		{"empty object", `{}`, `{"user_ip":"203.0.113.7"}`},
		{"empty object with whitespace", "{ \n }", `{"user_ip":"203.0.113.7"}`},
		{"added last", `{"a":1,"b":[2]}`, `{"a":1,"b":[2],"user_ip":"203.0.113.7"}`},
		{"only member", `{"user_ip":"198.51.100.1"}`, `{"user_ip":"203.0.113.7"}`},
		{"first member", `{"user_ip":"198.51.100.1","a":1}`, `{"a":1,"user_ip":"203.0.113.7"}`},
		{"last member", `{"a":1,"user_ip":"198.51.100.1"}`, `{"a":1,"user_ip":"203.0.113.7"}`},
		{"middle member", `{"a":1,"user_ip":"198.51.100.1","b":2}`, `{"a":1,"b":2,"user_ip":"203.0.113.7"}`},
		{"duplicates", `{"user_ip":"x","a":1,"user_ip":"y","b":2,"user_ip":"z"}`, `{"a":1,"b":2,"user_ip":"203.0.113.7"}`},
		{"only duplicates", `{"user_ip":1,"user_ip":2}`, `{"user_ip":"203.0.113.7"}`},
		{"escaped key", `{"user\u005fip":"x","a":1}`, `{"a":1,"user_ip":"203.0.113.7"}`},
		{"fully escaped key", `{"a":1,"\u0075\u0073\u0065\u0072\u005F\u0069\u0070":"x"}`, `{"a":1,"user_ip":"203.0.113.7"}`},
		{"escaped and plain duplicates", `{"user\u005fip":"x","user_ip":"y"}`, `{"user_ip":"203.0.113.7"}`},
		{"non-string values removed", `{"user_ip":null,"a":1,"user_ip":[1,{"k":"}"}],"user_ip":{"user_ip":1}}`, `{"a":1,"user_ip":"203.0.113.7"}`},
		{"similar names kept", `{"user_ip2":1,"USER_IP":2,"user_i":3," user_ip":4,"user\\_ip":5}`,
			`{"user_ip2":1,"USER_IP":2,"user_i":3," user_ip":4,"user\\_ip":5,"user_ip":"203.0.113.7"}`},
		{"name as a value kept", `{"a":"user_ip","b":["user_ip"]}`, `{"a":"user_ip","b":["user_ip"],"user_ip":"203.0.113.7"}`},
		{"nested fields untouched", `{"data":{"user_ip":"x"},"list":[{"user_ip":1}],"user_ip":"y"}`,
			`{"data":{"user_ip":"x"},"list":[{"user_ip":1}],"user_ip":"203.0.113.7"}`},
		{"escaped quotes in values", `{"a":"x\"},\"user_ip\":1","user_ip":"y\\","b":"\\\""}`,
			`{"a":"x\"},\"user_ip\":1","b":"\\\"","user_ip":"203.0.113.7"}`},
		{"duplicate other keys kept", `{"a":1,"user_ip":0,"a":2}`, `{"a":1,"a":2,"user_ip":"203.0.113.7"}`},
		{"numbers kept", `{"n":1.50,"user_ip":1e2,"m":-0}`, `{"n":1.50,"m":-0,"user_ip":"203.0.113.7"}`},
		{"pretty printed", "{\n  \"user_ip\": \"x\",\n  \"a\": {\n    \"b\": 1\n  }\n}\n", `{"a":{"b":1},"user_ip":"203.0.113.7"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Compact(nil, []byte(tc.in), "user_ip", ip)
			if err != nil {
				t.Fatalf("rejected %q: %v", tc.in, err)
			}
			if string(out) != tc.want {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
			checkOutput(t, out)
			checkField(t, out, "user_ip", ip)
		})
	}
}

func TestCompactClientIPFieldNames(t *testing.T) {
	cases := []struct{ name, field, ip, in, want string }{
		{"IPv6 address", "user_ip", "2001:db8::1", `{"a":1}`, `{"a":1,"user_ip":"2001:db8::1"}`},
		{"non-ASCII name", "adresse_ip_é", "192.0.2.1", `{"adresse_ip_\u00e9":"x","adresse_ip_é":"y","a":1}`, `{"a":1,"adresse_ip_é":"192.0.2.1"}`},
		{"name with spaces", "client ip", "192.0.2.1", `{"client ip":"x","clientip":1}`, `{"clientip":1,"client ip":"192.0.2.1"}`},
		{"one-letter name", "a", "192.0.2.1", `{"a":1,"b":{"a":2},"a":3}`, `{"b":{"a":2},"a":"192.0.2.1"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Compact(nil, []byte(tc.in), tc.field, tc.ip)
			if err != nil {
				t.Fatalf("rejected %q: %v", tc.in, err)
			}
			if string(out) != tc.want {
				t.Errorf("got  %s\nwant %s", out, tc.want)
			}
			checkOutput(t, out)
			checkField(t, out, tc.field, tc.ip)
		})
	}
}

func TestCompactClientIPFieldFixtures(t *testing.T) {
	for name, body := range allFixtures(t) {
		if name == invalidFixture {
			continue
		}
		t.Run(name, func(t *testing.T) {
			out, err := Compact(nil, body, "user_ip", "2001:db8::7")
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			checkOutput(t, out)
			checkField(t, out, "user_ip", "2001:db8::7")
			// Everything else is the plain compaction, unchanged.
			want := strings.TrimSuffix(stdCompact(t, body), "}") + `,"user_ip":"2001:db8::7"}`
			if string(out) != want {
				t.Errorf("got  %s\nwant %s", out, want)
			}
		})
	}
}

// checkField asserts that the top-level field appears exactly once, last,
// and decodes to ip.
func checkField(tb testing.TB, out []byte, field, ip string) {
	tb.Helper()
	members := topLevel(tb, out)
	n := 0
	for _, m := range members {
		if m.key == field {
			n++
		}
	}
	if n != 1 {
		tb.Fatalf("%q appears %d times in %s", field, n, out)
	}
	last := members[len(members)-1]
	var got string
	if err := json.Unmarshal([]byte(last.val), &got); last.key != field || err != nil || got != ip {
		tb.Errorf("last member is %q=%s, want %q=%q", last.key, last.val, field, ip)
	}
}

// The sentinels are compared with == by callers and shown to clients.
func TestErrorsAreDistinct(t *testing.T) {
	all := []error{ErrEmpty, ErrUTF8, ErrNotObject, ErrSyntax, ErrRange, ErrSurrogate}
	for i, a := range all {
		for j, b := range all {
			if i != j && (errors.Is(a, b) || a.Error() == b.Error()) {
				t.Errorf("%v and %v are not distinguishable", a, b)
			}
		}
	}
}
