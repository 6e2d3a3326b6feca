// Package event validates one telemetry event and turns it into the compact,
// single-line JSON that listeners receive. It never decodes into maps: key
// order, duplicate keys and number literals pass through byte for byte.
//
// By default it also holds events to I-JSON (RFC 7493), so that one
// publisher cannot send what strict consumers fail to decode: no number
// beyond the range of an IEEE 754 double, no lone surrogate escape.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// Errors returned by Compact. Their text is safe to show to clients: it
// never contains the body.
var (
	ErrEmpty     = errors.New("body is empty")
	ErrUTF8      = errors.New("body is not valid UTF-8")
	ErrNotObject = errors.New("body must be one JSON object")
	ErrSyntax    = errors.New("body is not valid JSON")
	ErrRange     = errors.New("body has a number beyond the range of a 64-bit float (I-JSON, RFC 7493)")
	ErrSurrogate = errors.New(`body has a \u escape that is a lone UTF-16 surrogate (I-JSON, RFC 7493)`)
)

// Compact validates body as exactly one I-JSON object in valid UTF-8 and
// appends its compact form to dst. When ipField is not empty, every
// top-level member of that name is removed and "ipField":"ip" is appended
// as the last member. Numbers are checked for range only: a large integer
// or a long decimal within range passes as written.
func Compact(dst, body []byte, ipField, ip string) ([]byte, error) {
	return compact(dst, body, ipField, ip, true)
}

// CompactLenient is Compact accepting any JSON object of RFC 8259, numbers
// of any size and lone surrogate escapes included.
func CompactLenient(dst, body []byte, ipField, ip string) ([]byte, error) {
	return compact(dst, body, ipField, ip, false)
}

func compact(dst, body []byte, ipField, ip string, strict bool) ([]byte, error) {
	first := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(first) == 0:
		return dst, ErrEmpty
	case first[0] != '{':
		if json.Valid(body) {
			return dst, ErrNotObject
		}
		return dst, ErrSyntax
	case !utf8.Valid(body):
		return dst, ErrUTF8
	}
	buf := bytes.NewBuffer(dst)
	if err := json.Compact(buf, body); err != nil {
		// json.Compact rejects trailing data after the object too.
		return dst, ErrSyntax
	}
	out := buf.Bytes()
	if strict {
		if err := checkStrict(out[len(dst):]); err != nil {
			return dst, err
		}
	}
	if ipField == "" {
		return out, nil
	}
	return withField(out, len(dst), ipField, ip), nil
}

// Check reports why obj, an event received already compacted (from another
// replica), is not one [Compact] (or, when strict is false,
// [CompactLenient]) could have returned: the same rules as ingest, valid
// UTF-8 included, which [json.Valid] does not check.
func Check(obj []byte, strict bool) error {
	switch {
	case len(obj) == 0:
		return ErrEmpty
	case obj[0] != '{':
		return ErrNotObject
	case !utf8.Valid(obj):
		return ErrUTF8
	case !json.Valid(obj):
		return ErrSyntax
	case strict:
		return checkStrict(obj)
	}
	return nil
}

// withField rewrites the compact object that starts at out[start:] so that
// field appears exactly once, last, with the string value val.
func withField(out []byte, start int, field, val string) []byte {
	obj := out[start:]
	w := start + 1 // write position: members are shifted left over removed ones
	members := 0
	// Each member is shifted left only after it has been read, and the walk
	// never looks back, so rewriting in place is safe.
	eachMember(obj, func(begin, keyEnd, end int) bool {
		if !keyIs(obj[begin:keyEnd], field) {
			if members > 0 {
				out[w] = ','
				w++
			}
			w += copy(out[w:], obj[begin:end])
			members++
		}
		return true
	})
	out = out[:w]
	if members > 0 {
		out = append(out, ',')
	}
	// Neither needs escaping: config rejects quotes, backslashes and control
	// characters in the field name, and val is a formatted IP address.
	out = append(append(append(out, '"'), field...), `":"`...)
	return append(append(out, val...), `"}`...)
}

// keyIs reports whether the JSON string literal lit decodes to name.
func keyIs(lit []byte, name string) bool {
	key, ok := Unquote(lit)
	return ok && string(key) == name
}

// skipString returns the index just past the string literal starting at
// obj[i] (a '"'). obj is valid compact JSON.
func skipString(obj []byte, i int) int {
	for i++; ; i++ {
		switch obj[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the index just past the value starting at obj[i].
func skipValue(obj []byte, i int) int {
	depth := 0
	for ; i < len(obj); i++ {
		switch obj[i] {
		case '"':
			i = skipString(obj, i) - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}
