package cloudevents

import "strconv"

// ErrNotArray is Split's error for a batch that is not a JSON array.
var ErrNotArray error = invalid{"batch", "must be a JSON array of events"}

// elementError is an error about one element of a batch: its text starts
// with the element's position, and it wraps the element's error.
type elementError struct {
	n   int
	err error
}

func (e elementError) Error() string { return "event " + strconv.Itoa(e.n) + ": " + e.err.Error() }
func (e elementError) Unwrap() error { return e.err }

// Split calls fn with each element of the JSON array body, in order, as
// the raw bytes between the separators (whitespace trimmed), until fn
// returns an error, which Split returns prefixed with the element's
// position ("event 3: …", counting from 1). It only finds the boundaries:
// strings and nesting are followed, not validated, so each element must be
// validated on its own (event.Compact does). Nesting costs a counter, not
// a stack.
func Split(body []byte, fn func(event []byte) error) error {
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '[' {
		return ErrNotArray
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		return trailing(body, i+1)
	}
	for n := 1; ; n++ {
		start := i
		depth := 0
	scan:
		for ; i < len(body); i++ {
			switch body[i] {
			case '"':
				i = endOfString(body, i+1)
			case '{', '[':
				depth++
			case '}', ']':
				if depth == 0 {
					break scan
				}
				depth--
			case ',':
				if depth == 0 {
					break scan
				}
			}
		}
		if i >= len(body) {
			return ErrNotArray
		}
		end := i
		for end > start && isSpace(body[end-1]) {
			end--
		}
		if err := fn(body[start:end]); err != nil {
			return elementError{n, err}
		}
		if body[i] == ']' {
			return trailing(body, i+1)
		}
		if body[i] == '}' {
			return ErrNotArray // a closing brace at depth 0
		}
		i = skipSpace(body, i+1)
	}
}

// endOfString returns the index of the quote that closes the string whose
// contents start at i, or len(b).
func endOfString(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return len(b)
}

func trailing(body []byte, i int) error {
	if skipSpace(body, i) != len(body) {
		return ErrNotArray
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
