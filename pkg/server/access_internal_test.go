package server

import (
	"net/http/httptest"
	"testing"
)

// The request handed on after the token check carries no token anywhere,
// and the rest of its query is exactly what the client sent, so the query
// is free for other uses (a malformed pair included, for them to refuse).
func TestTakeTokenLeavesNoTrace(t *testing.T) {
	for _, tc := range []struct {
		target, authz, token, rest string
		bearer                     bool
	}{
		{"/events?access_token=abc", "", "abc", "", true},
		{"/events?a=1&access_token=abc&b=%zz", "", "abc", "a=1&b=%zz", true},
		{"/events?access%5Ftoken=a%2Bb&access_token=second", "", "a+b", "", true},
		{"/events?a=1", "Bearer xyz", "xyz", "a=1", true},
		{"/events?a=1", "bEaReR   xyz ", "xyz", "a=1", true},
		{"/events?access_token=q", "Bearer h", "h", "", true},
		{"/events", "Basic dTpw", "", "", false},
		{"/events", "dTpw", "", "", false}, // a token without a scheme
		{"/events?access_token=q", "Bearer", "", "", false},
		{"/events?a=1", "", "", "a=1", true},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		if tc.authz != "" {
			r.Header.Set("Authorization", tc.authz)
		}
		token, bearer, out := takeToken(r)
		if token != tc.token || bearer != tc.bearer {
			t.Errorf("%s, Authorization %q: token %q, bearer %v; want %q, %v", tc.target, tc.authz, token, bearer, tc.token, tc.bearer)
		}
		if out.URL.RawQuery != tc.rest || out.Header.Get("Authorization") != "" {
			t.Errorf("%s: handed on query %q, Authorization %q; want %q and none", tc.target, out.URL.RawQuery, out.Header.Get("Authorization"), tc.rest)
		}
		if want := out.URL.RequestURI(); out.RequestURI != want {
			t.Errorf("%s: RequestURI %q, want %q", tc.target, out.RequestURI, want)
		}
		if r.RequestURI != tc.target || r.Header.Get("Authorization") != tc.authz {
			t.Errorf("%s: the original request was modified", tc.target)
		}
	}
}

func TestRedactedQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"a=1":                              "a=REDACTED",
		"access_token=s3cr3t":              "access_token=REDACTED",
		"a=1&access%5Ftoken=s3cr3t&b":      "a=REDACTED&access%5Ftoken=REDACTED&REDACTED",
		"x=1;access_token=s3cr3t":          "x=REDACTED;access_token=REDACTED",
		"ACCESS_TOKEN=s3cr3t&token=s3cr3t": "ACCESS_TOKEN=REDACTED&token=REDACTED",
		"s3cr3t":                           "REDACTED",
		"access_token%3Ds3cr3t&&a=":        "REDACTED&&a=REDACTED",
	} {
		if got := redactedQuery(in); got != want {
			t.Errorf("redactedQuery(%q) = %q, want %q", in, got, want)
		}
	}
}
