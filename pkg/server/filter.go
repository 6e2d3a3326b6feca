package server

import (
	"errors"
	"net/url"
	"strings"

	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
)

// reserved reports whether a query parameter of GET /events is not a
// filter but means something else.
func reserved(name string) bool {
	switch name {
	case access.QueryParam: // listener tokens, when access control is off too
		return true
	}
	return false
}

// parseFilter reads the filters of GET /events?event_name=START,ERROR&session_id=abc:
// each parameter other than the reserved ones names a top-level field, its
// comma-separated values are alternatives, and fields AND together. A field
// given twice accepts the values of both. Values are split on commas before
// they are unescaped, so %2C is a comma inside a value. nil means no
// filter. The error's text is safe to show to the client.
func parseFilter(rawQuery string) (*broadcast.Filter, error) {
	var spec broadcast.FilterSpec
	for pair := range strings.SplitSeq(rawQuery, "&") {
		if pair == "" {
			continue
		}
		rawName, rawValues, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		switch {
		case err != nil:
			return nil, errors.New("filter: malformed query string")
		case reserved(name):
			continue
		}
		var values []string
		for raw := range strings.SplitSeq(rawValues, ",") {
			v, err := url.QueryUnescape(raw)
			if err != nil {
				return nil, errors.New("filter: malformed query string")
			}
			values = append(values, v)
		}
		if err := spec.Add(name, values...); err != nil {
			return nil, err
		}
	}
	return spec.Filter(), nil
}
