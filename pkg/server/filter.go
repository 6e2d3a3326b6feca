package server

import (
	"errors"
	"fmt"
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

// Bounds on one listener's filter, so that matching stays cheap per event.
const (
	maxFilterFields = 16
	maxFilterValues = 256
)

// parseFilter reads the filters of GET /events?event_name=START,ERROR&session_id=abc:
// each parameter other than the reserved ones names a top-level field, its
// comma-separated values are alternatives, and fields AND together. A field
// given twice accepts the values of both. Values are split on commas before
// they are unescaped, so %2C is a comma inside a value. nil means no
// filter. The error's text is safe to show to the client.
func parseFilter(rawQuery string) (*broadcast.Filter, error) {
	var terms []broadcast.Term
	index := map[string]int{}
	values := 0
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
		case name == "":
			return nil, errors.New("filter: a parameter has no field name")
		}
		i, seen := index[name]
		if !seen {
			if len(terms) == maxFilterFields {
				return nil, fmt.Errorf("filter: more than %d fields", maxFilterFields)
			}
			i = len(terms)
			index[name] = i
			terms = append(terms, broadcast.Term{Field: name})
		}
		for raw := range strings.SplitSeq(rawValues, ",") {
			v, err := url.QueryUnescape(raw)
			switch {
			case err != nil:
				return nil, errors.New("filter: malformed query string")
			case v == "":
				return nil, fmt.Errorf("filter %q: empty value (use comma-separated values)", name)
			case values == maxFilterValues:
				return nil, fmt.Errorf("filter: more than %d values", maxFilterValues)
			}
			values++
			terms[i].Values = append(terms[i].Values, v)
		}
	}
	return broadcast.NewFilter(terms...), nil
}
