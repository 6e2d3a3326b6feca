package upstreamurl

import "testing"

func TestRedactHidesCredentialsOnly(t *testing.T) {
	for in, want := range map[string]string{
		"https://stream.wikimedia.org/v2/stream/recentchange":           "https://stream.wikimedia.org/v2/stream/recentchange",
		"https://user:pass@edge.example/events":                         "https://edge.example/events",
		"http://edge.example/events?access_token=abc&session_id=s1":     "http://edge.example/events?access_token=redacted&session_id=s1",
		"http://edge.example/events?api%5Fkey=k&sig=x&event_name=START": "http://edge.example/events?api%5Fkey=redacted&sig=redacted&event_name=START",
		"http://a b/%zz": "(invalid URL)",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
