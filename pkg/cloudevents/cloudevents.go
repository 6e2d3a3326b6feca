// Package cloudevents turns CloudEvents (v1.0) into the one JSON object per
// event that the publish path takes: the event's structured-mode JSON
// (JSON event format), attributes as top-level members and the data as
// `data` or `data_base64`. It knows no transport: the HTTP handler (pkg/server)
// and the gRPC service (pkg/grpcapi) hand it header values, bodies and
// message fields.
//
// It never decodes an event into a map: a structured event passes through
// byte for byte (key order, number literals), only checked. The CloudEvents
// SDK is not used for that reason; what it would bring is a decoder into
// maps and this package's few rules.
package cloudevents

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"event-dispatcher/pkg/event"
)

// SpecVersion is the only CloudEvents version accepted.
const SpecVersion = "1.0"

// ErrInvalid is the class of every error about an event's content. Errors
// wrapping it name the attribute at fault and are safe to show the sender.
var ErrInvalid = errors.New("invalid CloudEvent")

// invalid is an error naming an attribute (or "data", "event 3", …).
type invalid struct{ where, why string }

func (e invalid) Error() string        { return e.where + ": " + e.why }
func (e invalid) Is(target error) bool { return target == ErrInvalid }

func bad(where, format string, a ...any) error {
	return invalid{where, fmt.Sprintf(format, a...)}
}

// Check reports the first violation of the CloudEvents rules in obj, the
// compact JSON of one structured-mode event (what event.Compact returns):
// specversion "1.0"; id, source, type non-empty strings; subject, when
// present, a non-empty string; time RFC 3339; dataschema an absolute URI;
// datacontenttype a media type; no string value with a control character;
// attribute names of a-z and 0-9 only, each
// once, their values strings, numbers or booleans; data and data_base64
// never both, data_base64 valid base64. A member named ignore (the client
// IP field the service adds itself) is not checked.
func Check(obj []byte, ignore string) error {
	var (
		err      error
		seen     names
		required [3]bool // id, source, type
		version  bool
		data     string // "data" or "data_base64", once one is seen
	)
	event.Members(obj, func(lit, value []byte) bool {
		key := lit[1 : len(lit)-1] // compact JSON: a string literal
		if ignore != "" && string(key) == ignore {
			return true
		}
		name := string(key)
		if !seen.add(name) {
			err = bad(quoteName(name), "given twice")
			return false
		}
		if string(value) == "null" { // the JSON format: null is absent
			return true
		}
		switch name {
		case "data", "data_base64":
			if data != "" {
				err = bad(name, "data and data_base64 are exclusive")
				return false
			}
			data = name
			if name == "data_base64" {
				err = checkBase64(value)
			}
			return err == nil
		case "specversion":
			version = true
		case "id":
			required[0] = true
		case "source":
			required[1] = true
		case "type":
			required[2] = true
		}
		err = checkAttr(name, value)
		return err == nil
	})
	if err != nil {
		return err
	}
	if !version {
		return bad("specversion", "missing")
	}
	for i, name := range []string{"id", "source", "type"} {
		if !required[i] {
			return bad(name, "missing")
		}
	}
	return nil
}

// checkAttr checks one context attribute whose value is not null.
func checkAttr(name string, value []byte) error {
	if !validName(name) {
		return bad(quoteName(name), "attribute names are lower-case letters a-z and digits only")
	}
	s, isString := event.Unquote(value)
	if !isString {
		switch name {
		case "specversion", "id", "source", "type", "subject", "time", "dataschema", "datacontenttype":
			return bad(name, "must be a string")
		}
		if value[0] == '{' || value[0] == '[' {
			return bad(name, "must be a string, a number or a boolean")
		}
		return nil
	}
	return CheckAttr(name, string(s))
}

// CheckAttr checks the string value of one attribute (from JSON, a ce-
// header or a gRPC field): the rules of [Check] for that attribute.
func CheckAttr(name, v string) error {
	if !validName(name) {
		return bad(quoteName(name), "attribute names are lower-case letters a-z and digits only")
	}
	if hasControl(v) {
		return bad(name, "must not contain control characters (U+0000-U+001F, U+007F-U+009F)")
	}
	switch name {
	case "specversion":
		if v != SpecVersion {
			return bad(name, "must be %q", SpecVersion)
		}
	case "id", "source", "type", "subject":
		if v == "" {
			return bad(name, "must not be empty")
		}
	case "time":
		if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
			return bad(name, "must be an RFC 3339 timestamp, e.g. 2026-01-02T15:04:05Z")
		}
	case "dataschema":
		if u, err := url.Parse(v); err != nil || !u.IsAbs() {
			return bad(name, "must be an absolute URI")
		}
	case "datacontenttype":
		if _, _, err := mime.ParseMediaType(v); err != nil {
			return bad(name, "must be a media type, e.g. application/json")
		}
	}
	return nil
}

// hasControl reports whether v holds a character the CloudEvents type
// system forbids in a String: the control characters U+0000-U+001F and
// U+007F-U+009F (a newline in a ce- header value, a NUL in an id).
func hasControl(v string) bool {
	for _, r := range v {
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			return true
		}
	}
	return false
}

// validName: CloudEvents attribute names are a-z and 0-9, at least one.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := range len(name) {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// quoteName names an attribute in an error: quoted, and cut short, so a
// hostile name cannot make the answer large.
func quoteName(name string) string {
	const max = 40
	if len(name) > max {
		name = strings.ToValidUTF8(name[:max], "") + "…"
	}
	return fmt.Sprintf("attribute %q", name)
}

// checkBase64 checks that the data_base64 member is a string of standard,
// padded base64 (RFC 4648 §4) without decoding it.
func checkBase64(value []byte) error {
	s, ok := event.Unquote(value)
	if !ok {
		return bad("data_base64", "must be a string")
	}
	body := bytes.TrimRight(s, "=")
	if pad := len(s) - len(body); pad > 2 || len(s)%4 != 0 {
		return bad("data_base64", "must be base64 (RFC 4648, padded)")
	}
	for _, c := range body {
		if !isBase64(c) {
			return bad("data_base64", "must be base64 (RFC 4648, padded)")
		}
	}
	return nil
}

func isBase64(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}

// names is the set of attribute names seen in one event: a list while it
// is short (most events), a map beyond, so that an event of thousands of
// attributes costs linear time.
type names struct {
	list []string
	set  map[string]struct{}
}

func (n *names) add(name string) bool {
	if n.set != nil {
		if _, ok := n.set[name]; ok {
			return false
		}
		n.set[name] = struct{}{}
		return true
	}
	for _, s := range n.list {
		if s == name {
			return false
		}
	}
	n.list = append(n.list, name)
	if len(n.list) > 32 {
		n.set = make(map[string]struct{}, 64)
		for _, s := range n.list {
			n.set[s] = struct{}{}
		}
	}
	return true
}

// ErrDuplicate is the error for an attribute given more than once.
func ErrDuplicate(name string) error { return bad(quoteName(name), "given twice") }
