package event

import (
	"bytes"
	"strconv"
)

// maxPlainLen is the longest number literal without an exponent that needs
// no parsing: at most 308 integer digits keep it below 10^308, within the
// range of a double (about 1.8e308).
const maxPlainLen = 308

// checkStrict reports the first I-JSON violation in obj, which is valid
// compact JSON. It stays cheap on the ingest path: string contents are
// skipped with IndexByte unless they hold a backslash, and only numbers
// with an exponent or more than maxPlainLen characters are parsed.
func checkStrict(obj []byte) error {
	for i := 0; i < len(obj); {
		q := bytes.IndexByte(obj[i:], '"')
		if q < 0 {
			return checkNumbers(obj[i:])
		}
		if err := checkNumbers(obj[i : i+q]); err != nil {
			return err
		}
		end, err := checkString(obj, i+q+1)
		if err != nil {
			return err
		}
		i = end
	}
	return nil
}

// checkString checks the string whose contents start at obj[i] and returns
// the index just past its closing quote.
func checkString(obj []byte, i int) (int, error) {
	end := i + bytes.IndexByte(obj[i:], '"') // a candidate: it may be escaped
	for {
		b := bytes.IndexByte(obj[i:end], '\\')
		if b < 0 {
			return end + 1, nil
		}
		i += b
		if obj[i+1] != 'u' {
			i += 2
		} else {
			n, err := checkEscape(obj[i:])
			if err != nil {
				return 0, err
			}
			i += n
		}
		if i > end { // the candidate was the escaped quote
			end = i + bytes.IndexByte(obj[i:], '"')
		}
	}
}

// checkEscape checks the \u escape at the start of s and returns its
// length: 12 for a surrogate pair, else 6.
func checkEscape(s []byte) (int, error) {
	switch r := hex4(s[2:6]); {
	case r >= 0xdc00 && r < 0xe000:
		return 0, ErrSurrogate
	case r >= 0xd800 && r < 0xdc00:
		if len(s) < 12 || s[6] != '\\' || s[7] != 'u' {
			return 0, ErrSurrogate
		}
		if lo := hex4(s[8:12]); lo < 0xdc00 || lo >= 0xe000 {
			return 0, ErrSurrogate
		}
		return 12, nil
	}
	return 6, nil
}

// hex4 decodes four hex digits, already validated by json.Compact.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// checkNumbers checks every number literal in s, a run of compact JSON
// outside strings: punctuation, literals and numbers.
func checkNumbers(s []byte) error {
	for i := 0; i < len(s); {
		if c := s[i]; c != '-' && (c < '0' || c > '9') {
			i++
			continue
		}
		start, exp := i, false
		for i++; i < len(s); i++ {
			c := s[i]
			if c == 'e' || c == 'E' {
				exp = true
			} else if c != '.' && c != '+' && c != '-' && (c < '0' || c > '9') {
				break
			}
		}
		if exp || i-start > maxPlainLen {
			// ParseFloat reports ErrRange for overflow only: an underflow
			// to zero is a loss of precision, which I-JSON allows.
			if _, err := strconv.ParseFloat(string(s[start:i]), 64); err != nil {
				return ErrRange
			}
		}
	}
	return nil
}
