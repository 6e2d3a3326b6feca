package event

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// FuzzCompact checks CompactLenient against encoding/json as the
// reference: it accepts exactly the valid UTF-8 JSON objects, its output is
// their compact form, and with a client-IP field that field is the only
// change. Compact (strict) must accept exactly those that encoding/json
// also decodes into Go values and whose escapes are valid UTF-16, with the
// same output.
func FuzzCompact(f *testing.F) {
	for _, body := range allFixtures(f) {
		f.Add(body, "")
		f.Add(body, "user_ip")
	}
	for _, tc := range rejectCases {
		f.Add([]byte(tc.in), "user_ip")
	}
	for _, tc := range strictRejects {
		f.Add([]byte(tc.in), "user_ip")
	}
	for _, s := range strictAccepts {
		f.Add([]byte(s), "")
	}
	for _, s := range []string{
		`{}`, `{"user_ip":1}`, `{"user\u005fip":"x","a":{"user_ip":2}}`, `{"a":"\"}","user_ip":[{}],"a":-0.0e+1}`,
		"{\n \"é\" : \"\\ud800\" }\n", `{"":""}`,
	} {
		f.Add([]byte(s), "user_ip")
		f.Add([]byte(s), "")
		f.Add([]byte(s), "a")
	}
	f.Fuzz(func(t *testing.T, body []byte, field string) {
		// The names configuration lets through (see CLIENT_IP_FIELD).
		if !utf8.ValidString(field) || strings.ContainsFunc(field, func(r rune) bool {
			return r < 0x20 || r == '"' || r == '\\' || r == 0x7f
		}) {
			return
		}
		const ip = "2001:db8::1"
		orig := bytes.Clone(body)
		out, err := CompactLenient([]byte("p"), body, field, ip)
		if !bytes.Equal(body, orig) {
			t.Fatal("CompactLenient modified its input")
		}
		strict, serr := Compact([]byte("p"), body, field, ip)
		if !bytes.Equal(body, orig) {
			t.Fatal("Compact modified its input")
		}
		checkStrictAgainstReference(t, body, out, err, strict, serr)

		trimmed := bytes.TrimLeft(body, " \t\r\n")
		isObject := len(trimmed) > 0 && trimmed[0] == '{'
		valid := utf8.Valid(body) && json.Valid(body) && isObject
		if err != nil {
			if string(out) != "p" {
				t.Fatalf("on error dst became %q", out)
			}
			switch err {
			case ErrEmpty:
				if len(trimmed) != 0 {
					t.Fatalf("ErrEmpty for %q", body)
				}
			case ErrNotObject:
				if isObject || !json.Valid(body) {
					t.Fatalf("ErrNotObject for %q", body)
				}
			case ErrUTF8:
				if utf8.Valid(body) {
					t.Fatalf("ErrUTF8 for valid UTF-8 %q", body)
				}
			case ErrSyntax:
				if json.Valid(body) {
					t.Fatalf("ErrSyntax for valid JSON %q", body)
				}
			default:
				t.Fatalf("unexpected error %v", err)
			}
			if valid {
				t.Fatalf("rejected valid object %q: %v", body, err)
			}
			return
		}
		if !valid {
			t.Fatalf("accepted %q", body)
		}
		if !bytes.HasPrefix(out, []byte("p")) {
			t.Fatalf("dst prefix lost: %q", out)
		}
		out = out[1:]
		checkOutput(t, out)
		ref := stdCompact(t, body)
		if field == "" {
			if string(out) != ref {
				t.Fatalf("got  %q\nwant %q", out, ref)
			}
			return
		}
		// Expected: the reference members minus every top-level one named
		// field, in order, then the field itself.
		var want []member
		for _, m := range topLevel(t, []byte(ref)) {
			if m.key != field {
				want = append(want, m)
			}
		}
		ipJSON, _ := json.Marshal(ip)
		want = append(want, member{field, string(ipJSON)})
		got := topLevel(t, out)
		if len(got) != len(want) {
			t.Fatalf("got %d members, want %d\ngot  %q\nref  %q", len(got), len(want), out, ref)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("member %d is %q, want %q\ngot  %q\nref  %q", i, got[i], want[i], out, ref)
			}
		}
		checkField(t, out, field, ip)
	})
}

// checkStrictAgainstReference compares Compact's answer (strict, serr) with
// CompactLenient's (out, err) and the reference: encoding/json decoding the
// body into Go values (float64 numbers) plus a plain UTF-16 check of every
// string literal's escapes.
func checkStrictAgainstReference(t *testing.T, body, out []byte, err error, strict []byte, serr error) {
	t.Helper()
	if err != nil { // not JSON at all: the same refusal
		if serr != err || string(strict) != "p" {
			t.Fatalf("lenient refused with %v, strict answered %q, %v", err, strict, serr)
		}
		return
	}
	var v any
	decodes := json.Unmarshal(body, &v) == nil
	utf16OK := escapesValidUTF16(t, body)
	switch {
	case serr == nil:
		if !decodes || !utf16OK {
			t.Fatalf("strict accepted %q (decodes %v, escapes valid UTF-16 %v)", body, decodes, utf16OK)
		}
		if !bytes.Equal(strict, out) {
			t.Fatalf("strict output %q differs from lenient %q", strict, out)
		}
	case string(strict) != "p":
		t.Fatalf("on error dst became %q", strict)
	case serr == ErrRange:
		if decodes {
			t.Fatalf("ErrRange for %q, which encoding/json decodes", body)
		}
	case serr == ErrSurrogate:
		if utf16OK {
			t.Fatalf("ErrSurrogate for %q, whose escapes are valid UTF-16", body)
		}
	default:
		t.Fatalf("strict refused the valid %q with %v", body, serr)
	}
}

// escapesValidUTF16 reports whether every string literal of body, valid
// JSON, is valid UTF-16 once its escapes are decoded: each high surrogate
// followed by a low one, no low surrogate alone. The literals are found with
// encoding/json's tokenizer, independently of the code under test.
func escapesValidUTF16(t *testing.T, body []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(body))
	prev := int64(0)
	for {
		tok, err := dec.Token()
		if err != nil {
			return true // io.EOF: body is valid JSON
		}
		end := dec.InputOffset()
		raw := body[prev:end]
		prev = end
		if _, ok := tok.(string); !ok {
			continue
		}
		lit := raw[bytes.IndexByte(raw, '"')+1 : len(raw)-1]
		var units []uint16
		for i := 0; i < len(lit); {
			switch {
			case lit[i] == '\\' && lit[i+1] == 'u':
				n, err := strconv.ParseUint(string(lit[i+2:i+6]), 16, 16)
				if err != nil {
					t.Fatalf("bad escape in %q", lit)
				}
				units = append(units, uint16(n))
				i += 6
			case lit[i] == '\\':
				units = append(units, uint16(lit[i+1]))
				i += 2
			default:
				r, size := utf8.DecodeRune(lit[i:])
				units = utf16.AppendRune(units, r)
				i += size
			}
		}
		for i := 0; i < len(units); i++ {
			switch u := rune(units[i]); {
			case u >= 0xdc00 && u < 0xe000:
				return false
			case u >= 0xd800 && u < 0xdc00:
				if i+1 == len(units) || units[i+1] < 0xdc00 || units[i+1] >= 0xe000 {
					return false
				}
				i++
			}
		}
	}
}
