package event

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCompact checks Compact against encoding/json as the reference: it
// accepts exactly the valid UTF-8 JSON objects, its output is their compact
// form, and with a client-IP field that field is the only change.
func FuzzCompact(f *testing.F) {
	for _, body := range allFixtures(f) {
		f.Add(body, "")
		f.Add(body, "user_ip")
	}
	for _, tc := range rejectCases {
		f.Add([]byte(tc.in), "user_ip")
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
		out, err := Compact([]byte("p"), body, field, ip)
		if !bytes.Equal(body, orig) {
			t.Fatal("Compact modified its input")
		}

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
