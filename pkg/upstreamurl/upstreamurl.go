// Package upstreamurl checks and shows the settings of the upstream SSE
// feeds (UPSTREAM_URLS, UPSTREAM_HEADERS) without leaking their secrets. It
// is apart from pkg/upstream so that the configuration can use it without
// importing the relay.
package upstreamurl

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// Check reports why s cannot be followed: it must be an absolute
// http(s) URL with a host and no fragment. The error never quotes the
// URL's credentials.
func Check(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", Redact(s))
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: only http:// and https:// feeds can be followed", Redact(s))
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host", Redact(s))
	case u.Fragment != "" || strings.HasSuffix(s, "#"):
		return fmt.Errorf("%q: a #fragment is never sent; remove it", Redact(s))
	}
	return nil
}

// Redact returns the URL as it may be shown in logs, /health and metric
// labels: without user and password, and with the value of every query
// parameter whose name suggests a secret (token, key, secret, pass, auth,
// sig, credential) replaced by "redacted". An unparsable URL shows as
// "(invalid URL)": it could hold anything.
func Redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		q := strings.Split(u.RawQuery, "&")
		for i, kv := range q {
			name, _, found := strings.Cut(kv, "=")
			if found && secretName(name) {
				q[i] = name + "=redacted"
			}
		}
		u.RawQuery = strings.Join(q, "&")
	}
	return u.String()
}

func secretName(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.ToLower(name)
	for _, s := range []string{"token", "key", "secret", "pass", "auth", "sig", "credential"} {
		if strings.Contains(name, s) {
			return true
		}
	}
	return false
}

// ParseHeaders reads UPSTREAM_HEADERS: a JSON object of header names to
// string values, e.g. {"Authorization":"Bearer abc","X-Api-Key":"k"}. JSON
// leaves nothing ambiguous (a value may hold commas, colons, quotes) and
// fits on one line of an env file. Errors name the header, never its value.
func ParseHeaders(s string) (http.Header, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, errors.New(`must be a JSON object of string values, e.g. {"Authorization":"Bearer …"}`)
	}
	h := http.Header{}
	var errs []error
	for name, value := range m {
		canon := textproto.CanonicalMIMEHeaderKey(name)
		switch {
		case !httpguts.ValidHeaderFieldName(name):
			errs = append(errs, fmt.Errorf("%q is not a header name", name))
		case !httpguts.ValidHeaderFieldValue(value):
			errs = append(errs, fmt.Errorf("header %s: the value holds a character a header cannot carry", canon))
		case canon == "User-Agent":
			errs = append(errs, errors.New("User-Agent has a variable of its own (-h lists it)"))
		case reserved[canon]:
			errs = append(errs, fmt.Errorf("header %s is set by the relay itself", canon))
		default:
			h.Set(canon, value)
		}
	}
	return h, errors.Join(errs...)
}

// reserved headers are the relay's own: the stream's protocol depends on
// them, or net/http sets them from the request.
var reserved = map[string]bool{
	"Last-Event-Id": true, "Accept": true, "Host": true, "Content-Length": true, "Transfer-Encoding": true,
	"Connection": true, "Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Accept-Encoding": true,
}
