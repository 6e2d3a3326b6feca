package broadcast

import (
	"errors"
	"fmt"
)

// Bounds on one listener's filter, whatever protocol it came in, so that
// matching stays cheap per event.
const (
	MaxFilterFields = 16
	MaxFilterValues = 256
)

// FilterSpec collects a listener's filter from its protocol's form (the
// query of GET /events, the map of a gRPC SubscribeRequest) under the
// same rules and bounds: a field named twice accepts the values of both,
// fields AND together, no empty name or value. The zero value is ready.
// Errors are safe to show to the client.
type FilterSpec struct {
	terms  []Term
	index  map[string]int
	values int
}

// Add accepts values as alternatives for the top-level field name.
func (s *FilterSpec) Add(name string, values ...string) error {
	if name == "" {
		return errors.New("filter: a parameter has no field name")
	}
	i, seen := s.index[name]
	if !seen {
		if len(s.terms) == MaxFilterFields {
			return fmt.Errorf("filter: more than %d fields", MaxFilterFields)
		}
		if s.index == nil {
			s.index = map[string]int{}
		}
		i = len(s.terms)
		s.index[name] = i
		s.terms = append(s.terms, Term{Field: name})
	}
	for _, v := range values {
		switch {
		case v == "":
			return fmt.Errorf("filter %q: empty value (use comma-separated values)", name)
		case s.values == MaxFilterValues:
			return fmt.Errorf("filter: more than %d values", MaxFilterValues)
		}
		s.values++
		s.terms[i].Values = append(s.terms[i].Values, v)
	}
	return nil
}

// Filter returns the filter collected so far; nil when it is empty.
func (s *FilterSpec) Filter() *Filter { return NewFilter(s.terms...) }
