package ssetest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

func TestStreamParsesBlocksFromRawBytes(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		want    []Event
		wantErr error
	}{
		{"retry, comment, data, then a clean end",
			"retry: 2000\n\n: hb\n\ndata: {\"a\":1}\n\n",
			[]Event{
				{Retry: "2000", Raw: "retry: 2000\n\n"},
				{Comments: []string{"hb"}, Raw: ": hb\n\n"},
				{Data: []string{`{"a":1}`}, Raw: "data: {\"a\":1}\n\n"},
			}, io.EOF},
		{"one leading byte order mark is ignored, as EventSource does; a later one is not",
			"\ufeffretry: 1500\n\n\ufeffdata: x\n\n",
			[]Event{
				{Retry: "1500", Raw: "\ufeffretry: 1500\n\n"},
				{Other: []string{"\ufeffdata: x"}, Raw: "\ufeffdata: x\n\n"},
			}, io.EOF},
		{"CRLF lines, no space after the colon, several data lines",
			"data:x\r\ndata: y\r\n\r\n",
			[]Event{{Data: []string{"x", "y"}, Raw: "data:x\r\ndata: y\r\n\r\n"}}, io.EOF},
		{"fields the service never sends are kept apart",
			"id: 5\nevent: e\ndata: d\n\n",
			[]Event{{Data: []string{"d"}, Other: []string{"id: 5", "event: e"}, Raw: "id: 5\nevent: e\ndata: d\n\n"}}, io.EOF},
		{"a stream cut mid-block",
			"data: whole\n\ndata: half",
			[]Event{{Data: []string{"whole"}, Raw: "data: whole\n\n"}}, ErrPartialEvent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, c.raw)
			}))
			defer ts.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := Open(ctx, ts.Client(), ts.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var got []Event
			for {
				e, err := s.Next(ctx)
				if err != nil {
					if !errors.Is(err, c.wantErr) {
						t.Errorf("ended with %v, want %v", err, c.wantErr)
					}
					break
				}
				got = append(got, e)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func TestWithMembersInsertsFirst(t *testing.T) {
	cases := []struct{ obj, members, want string }{
		{"{\n  \"a\": 1\n}", `"s":2`, "{\"s\":2,\n  \"a\": 1\n}"},
		{"{ }", `"s":2`, `{"s":2 }`},
		{" {}", `"s":2`, ` {"s":2}`},
	}
	for _, c := range cases {
		if got := string(WithMembers([]byte(c.obj), c.members)); got != c.want {
			t.Errorf("WithMembers(%q, %q) = %q, want %q", c.obj, c.members, got, c.want)
		}
	}
}
