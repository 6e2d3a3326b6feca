package main

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"
)

// STRICT_JSON reaches the server: on by default, off when set to false.
func TestStrictJSONSetting(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want int
	}{
		{nil, http.StatusBadRequest},
		{[]string{"STRICT_JSON=false"}, http.StatusNoContent},
	} {
		p := startProcess(t, nil, append([]string{"PORT=0"}, c.env...)...)
		_, base := p.listening(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/events", bytes.NewReader([]byte(`{"n":1e999999}`)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%q: status %d, want %d", c.env, resp.StatusCode, c.want)
		}
	}
}
