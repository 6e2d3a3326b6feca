package config

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"event-dispatcher/pkg/upstreamurl"
)

// maxUpstreams bounds UPSTREAM_URLS: each is a goroutine and a connection
// for the life of the process, and a metrics label.
const maxUpstreams = 64

// validateUpstreams checks the UPSTREAM_* settings and parses the headers.
// No message quotes a header value or a URL's credentials.
func (c *Config) validateUpstreams() []error {
	var errs []error
	var urls, shown []string
	for i, u := range c.UpstreamURLs {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if err := upstreamurl.Check(u); err != nil {
			errs = append(errs, fmt.Errorf("UPSTREAM_URLS: URL %d: %w", i+1, err))
		} else if slices.Contains(shown, upstreamurl.Redact(u)) {
			// Shown alike in /health and the metrics; most likely the same feed.
			errs = append(errs, fmt.Errorf("UPSTREAM_URLS: %q is listed twice: each event would be relayed twice", upstreamurl.Redact(u)))
		}
		urls, shown = append(urls, u), append(shown, upstreamurl.Redact(u))
	}
	if len(urls) > maxUpstreams {
		errs = append(errs, fmt.Errorf("UPSTREAM_URLS: at most %d URLs, got %d", maxUpstreams, len(urls)))
	}
	c.UpstreamURLs = urls
	var types []string
	for _, t := range c.UpstreamEventTypes {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if strings.ContainsAny(t, "\r\n") {
			errs = append(errs, fmt.Errorf("UPSTREAM_EVENT_TYPES: %q cannot be an SSE event type", t))
		}
		types = append(types, t)
	}
	c.UpstreamEventTypes = types
	h, err := upstreamurl.ParseHeaders(c.UpstreamHeaders)
	if err != nil {
		errs = append(errs, fmt.Errorf("UPSTREAM_HEADERS: %w", err))
	}
	c.UpstreamHeader = h
	if ua := c.UpstreamUserAgent; !httpguts.ValidHeaderFieldValue(ua) || len(ua) > 512 {
		errs = append(errs, errors.New("UPSTREAM_USER_AGENT: must be at most 512 characters a header can carry, such as my-relay/1.0 (ops@example.org)"))
	}
	if d := c.UpstreamIdleTimeout; d < time.Second || d > time.Hour {
		errs = append(errs, fmt.Errorf("UPSTREAM_IDLE_TIMEOUT: must be between 1s and 1h, got %s", d))
	}
	return errs
}

// redactURLs lists the upstreams as logs may show them.
func redactURLs(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = upstreamurl.Redact(u)
	}
	return strings.Join(out, ",")
}

// headerNames shows which headers are set, never their values.
func headerNames(h http.Header) string {
	var names []string
	for name := range h {
		names = append(names, name+": [redacted]")
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
