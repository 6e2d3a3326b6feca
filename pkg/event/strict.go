package event

import (
	"encoding/binary"
	"strconv"
)

// maxPlainLen is the longest number literal without an exponent that needs
// no parsing: at most 308 integer digits keep it below 10^308, within the
// range of a double (about 1.8e308).
const maxPlainLen = 308

// checkStrict reports the first I-JSON violation in obj, which is valid
// compact JSON. It is one pass of byte comparisons, cheaper on events of
// many short strings than searching for each quote: only \u escapes are
// decoded, and only numbers with an exponent or more than maxPlainLen
// characters are parsed.
func checkStrict(obj []byte) error {
	for i := 0; i < len(obj); i++ {
		switch c := obj[i]; {
		case c == '"':
			end, err := checkString(obj, i+1)
			if err != nil {
				return err
			}
			i = end
		case c == '-' || (c >= '0' && c <= '9'):
			end, err := checkNumber(obj, i)
			if err != nil {
				return err
			}
			i = end - 1
		}
	}
	return nil
}

// checkString checks the string whose contents start at obj[i] and returns
// the index of its closing quote.
func checkString(obj []byte, i int) (int, error) {
	for {
		i = skipPlain(obj, i)
		switch obj[i] {
		case '"':
			return i, nil
		case '\\':
			if obj[i+1] != 'u' {
				i += 2
				continue
			}
			n, err := checkEscape(obj[i:])
			if err != nil {
				return 0, err
			}
			i += n
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

// checkNumber checks the number literal starting at obj[i] and returns the
// index just past it.
func checkNumber(obj []byte, i int) (int, error) {
	start, exp := i, false
	for i++; i < len(obj); i++ {
		c := obj[i]
		if c == 'e' || c == 'E' {
			exp = true
		} else if c != '.' && c != '+' && c != '-' && (c < '0' || c > '9') {
			break
		}
	}
	if exp || i-start > maxPlainLen {
		// ParseFloat reports ErrRange for overflow only: an underflow to
		// zero is a loss of precision, which I-JSON allows.
		if _, err := strconv.ParseFloat(string(obj[start:i]), 64); err != nil {
			return 0, ErrRange
		}
	}
	return i, nil
}

// skipPlain returns the index of the first quote or backslash at or after
// obj[i], eight bytes at a time while it can: most of an event is string
// contents without either.
func skipPlain(obj []byte, i int) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for ; i+8 <= len(obj); i += 8 {
		x := binary.LittleEndian.Uint64(obj[i:])
		q, b := x^(ones*'"'), x^(ones*'\\')
		if ((q-ones)&^q|(b-ones)&^b)&highs != 0 { // a zero byte in q or b
			break
		}
	}
	for obj[i] != '"' && obj[i] != '\\' {
		i++
	}
	return i
}
