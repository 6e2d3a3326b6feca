package cloudevents

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"slices"
	"strings"
	"unicode/utf8"
)

// Attr is one context attribute as a string: from a ce- header or a gRPC
// message field.
type Attr struct{ Name, Value string }

// Binary appends the structured-mode JSON of an event received in binary
// mode: attrs are its attributes (the ce- headers, names without the
// prefix, values decoded with [DecodeHeader]), contentType its
// datacontenttype (the Content-Type header, "" when absent) and data its
// data (the body; empty: no data). Each attribute is checked as [Check]
// does; datacontenttype cannot be an attribute here, it is contentType.
// The attributes are written specversion, id, source, type first, then
// the others by name, then datacontenttype and the data.
func Binary(dst []byte, attrs []Attr, contentType string, data []byte) ([]byte, error) {
	var seen names
	for _, a := range attrs {
		if err := CheckAttr(a.Name, a.Value); err != nil {
			return dst, err
		}
		switch {
		case a.Name == "datacontenttype":
			return dst, bad("datacontenttype", "in binary mode it is the Content-Type header")
		case a.Name == "data":
			return dst, bad("data", "in binary mode it is the body")
		case !seen.add(a.Name):
			return dst, bad(quoteName(a.Name), "given twice")
		}
	}
	for _, name := range []string{"specversion", "id", "source", "type"} {
		if !slices.ContainsFunc(attrs, func(a Attr) bool { return a.Name == name }) {
			return dst, bad(name, "missing")
		}
	}
	slices.SortFunc(attrs, func(a, b Attr) int {
		if d := rank(a.Name) - rank(b.Name); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	return Encode(dst, attrs, contentType, data)
}

// rank puts the required attributes first, in the order of the spec.
func rank(name string) int {
	switch name {
	case "specversion":
		return 0
	case "id":
		return 1
	case "source":
		return 2
	case "type":
		return 3
	}
	return 4
}

// Encode appends the structured-mode JSON of an event: attrs as string
// members in their order, then "datacontenttype" when contentType is not
// empty, then the data unless it is empty: as a JSON value when
// contentType is JSON or empty ([IsJSON]; data must then be valid JSON),
// as a string for text types (data must be UTF-8), as data_base64
// otherwise. Attribute values must be valid UTF-8 (checked by the caller,
// see [DecodeHeader]).
func Encode(dst []byte, attrs []Attr, contentType string, data []byte) ([]byte, error) {
	k := asBase64
	switch {
	case IsJSON(contentType):
		k = asJSON
	case isText(contentType):
		k = asText
	}
	return encode(dst, attrs, contentType, data, k)
}

// Push appends the structured-mode JSON of an event pushed over gRPC
// (eventservice.PushEventRequest): the four required attributes, checked,
// then the data, when not empty: valid JSON (UTF-8) as "data" with datacontenttype
// application/json, anything else as "data_base64" (the message says
// nothing of its type, so no datacontenttype).
func Push(dst []byte, specversion, id, source, typ string, data []byte) ([]byte, error) {
	attrs := []Attr{{"specversion", specversion}, {"id", id}, {"source", source}, {"type", typ}}
	for _, a := range attrs {
		if err := CheckAttr(a.Name, a.Value); err != nil {
			return dst, err
		}
		if !utf8.ValidString(a.Value) {
			return dst, bad(a.Name, "is not valid UTF-8")
		}
	}
	// JSON is UTF-8 (RFC 8259 §8.1); json.Valid does not check that, and
	// bytes of JSON's shape but not UTF-8 are bytes like any others.
	if len(data) > 0 && utf8.Valid(data) && json.Valid(data) {
		return encode(dst, attrs, "application/json", data, asJSON)
	}
	return encode(dst, attrs, "", data, asBase64)
}

// dataKind is how the data is written.
type dataKind int

const (
	asJSON dataKind = iota
	asText
	asBase64
)

func encode(dst []byte, attrs []Attr, contentType string, data []byte, k dataKind) ([]byte, error) {
	start := len(dst)
	dst = append(dst, '{')
	for _, a := range attrs {
		dst = appendMember(dst, a.Name, a.Value)
	}
	if contentType != "" {
		if err := CheckAttr("datacontenttype", contentType); err != nil {
			return dst[:start], err
		}
		dst = appendMember(dst, "datacontenttype", contentType)
	}
	if len(data) > 0 {
		switch k {
		case asJSON:
			if !json.Valid(data) {
				return dst[:start], bad("data", "is not valid JSON, which its content type says it is")
			}
			dst = append(dst, `"data":`...)
			dst = append(dst, data...)
			dst = append(dst, ',')
		case asText:
			if !utf8.Valid(data) {
				return dst[:start], bad("data", "is not valid UTF-8 text, which its content type says it is")
			}
			dst = appendMember(dst, "data", string(data))
		default:
			dst = append(dst, `"data_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, data)
			dst = append(dst, `",`...)
		}
	}
	if dst[len(dst)-1] == ',' {
		dst = dst[:len(dst)-1]
	}
	return append(dst, '}'), nil
}

// IsJSON reports whether data of this datacontenttype is written as a JSON
// value: absent, application/json, or any */*+json type.
func IsJSON(contentType string) bool {
	if contentType == "" {
		return true
	}
	t := mediaType(contentType)
	return t == "application/json" || strings.HasSuffix(t, "+json")
}

func isText(contentType string) bool {
	return strings.HasPrefix(mediaType(contentType), "text/")
}

// mediaType is the type/subtype of a Content-Type, lower case, without
// parameters.
func mediaType(contentType string) string {
	t, _, _ := strings.Cut(contentType, ";")
	t = strings.ToLower(strings.TrimSpace(t))
	if _, _, err := mime.ParseMediaType(t); err != nil {
		return ""
	}
	return t
}

// appendMember appends "name":"value", with value escaped for JSON.
func appendMember(dst []byte, name, value string) []byte {
	dst = appendString(dst, name)
	dst = append(dst, ':')
	dst = appendString(dst, value)
	return append(dst, ',')
}

const hexDigits = "0123456789abcdef"

// appendString appends s, valid UTF-8, as a JSON string: quotes,
// backslashes and control characters escaped, everything else as is.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[last:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		last = i + 1
	}
	dst = append(dst, s[last:]...)
	return append(dst, '"')
}

// DecodeHeader percent-decodes the value of a ce- header, as the HTTP
// protocol binding (3.1.3.2) asks: every %XX is the byte XX, and the result
// must be UTF-8. A % not followed by two hex digits is an error.
func DecodeHeader(name, v string) (string, error) {
	if strings.IndexByte(v, '%') < 0 {
		if !utf8.ValidString(v) {
			return "", bad(quoteName(name), "is not valid UTF-8")
		}
		return v, nil
	}
	b := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b = append(b, v[i])
			continue
		}
		if i+2 >= len(v) || unhex(v[i+1]) < 0 || unhex(v[i+2]) < 0 {
			return "", bad(quoteName(name), "invalid percent-encoding in its header")
		}
		b = append(b, byte(unhex(v[i+1])<<4|unhex(v[i+2])))
		i += 2
	}
	if !utf8.Valid(b) {
		return "", bad(quoteName(name), "is not valid UTF-8 once percent-decoded")
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Mode is how a CloudEvent travels in an HTTP request (or any transport
// with a content type): the HTTP protocol binding's three content modes.
type Mode int

// The content modes.
const (
	ModeBinary     Mode = iota // attributes in headers, the body is the data
	ModeStructured             // application/cloudevents+json: the body is one event
	ModeBatch                  // application/cloudevents-batch+json: the body is an array of events
)

// ErrFormat is ModeOf's error for an event format other than JSON
// (application/cloudevents+avro, …).
var ErrFormat = errors.New("only the JSON event format is supported: application/cloudevents+json or application/cloudevents-batch+json")

// ModeOf returns the content mode a request's Content-Type announces.
func ModeOf(contentType string) (Mode, error) {
	t := mediaType(contentType)
	switch {
	case t == "application/cloudevents+json":
		return ModeStructured, nil
	case t == "application/cloudevents-batch+json":
		return ModeBatch, nil
	case strings.HasPrefix(t, "application/cloudevents+"), strings.HasPrefix(t, "application/cloudevents-batch+"),
		t == "application/cloudevents", t == "application/cloudevents-batch":
		return 0, ErrFormat
	}
	return ModeBinary, nil
}
