package event

import (
	"bytes"
	"encoding/json"
)

// Members calls fn with the key and the raw value of each top-level member
// of obj, in order, until fn returns false. obj must be what [Compact]
// returned: it walks the bytes without decoding, so nested values are
// skipped, not parsed. key is the literal with its quotes; see [Unquote].
func Members(obj []byte, fn func(key, value []byte) bool) {
	eachMember(obj, func(begin, keyEnd, end int) bool {
		return fn(obj[begin:keyEnd], obj[keyEnd+1:end]) // the ':' between them
	})
}

// eachMember calls fn with the offsets of each top-level member of the
// compact object obj: where its key starts, where the key ends and where
// the value ends.
func eachMember(obj []byte, fn func(begin, keyEnd, end int) bool) {
	i := 1
	for i < len(obj)-1 { // obj[0] is '{', obj[len-1] is '}'
		if obj[i] == ',' {
			i++
		}
		keyEnd := skipString(obj, i)
		end := skipValue(obj, keyEnd+1) // after ':'
		if !fn(i, keyEnd, end) {
			return
		}
		i = end
	}
}

// Unquote returns the text of the JSON string literal lit (quotes
// included). Without escapes it is a subslice of lit; with escapes, a
// decoded copy.
func Unquote(lit []byte) ([]byte, bool) {
	if len(lit) < 2 || lit[0] != '"' {
		return nil, false
	}
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner, true
	}
	var s string
	if json.Unmarshal(lit, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}
