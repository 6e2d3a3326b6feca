package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// newPostClient returns the publishers' client: keep-alive with an idle
// pool large enough that no publisher ever opens a second connection, no
// proxy (the target is measured directly) and no compression. With -http2
// the publishers share one HTTP/2 connection per replica instead.
func newPostClient(cfg config, tc *tls.Config) *http.Client {
	if cfg.HTTP2 {
		return &http.Client{Timeout: cfg.PostTimeout, Transport: http2Transport(cfg.URLs[0].Scheme, tc)}
	}
	return &http.Client{
		Timeout: cfg.PostTimeout,
		Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          2 * cfg.Publishers,
			MaxIdleConnsPerHost:   2 * cfg.Publishers,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: cfg.PostTimeout,
			DisableCompression:    true,
			ForceAttemptHTTP2:     false,
			TLSClientConfig:       tc.Clone(),
		},
	}
}

// pubStats is what one publisher counted during one phase.
type pubStats struct {
	sent, accepted, canceled uint64
	byStatus                 map[int]uint64
	errs                     map[string]uint64
}

// publish sends events until the phase's deadline or event cap, or until
// ctx ends. Event k of the phase is due at start + k/rate, whichever
// publisher takes it, so the total rate holds however the POSTs' latencies
// spread; a publisher that falls behind sends at once, until the deadline.
func publish(ctx context.Context, ph *phase, pub int, client *http.Client, target string, inj injector) pubStats {
	st := pubStats{byStatus: map[int]uint64{}, errs: map[string]uint64{}}
	var interval time.Duration
	if ph.rate > 0 {
		interval = time.Duration(float64(time.Second) / ph.rate)
	}
	for ctx.Err() == nil {
		k := ph.next.Add(1) - 1
		if k >= ph.limit {
			return st
		}
		// Latency runs from when the event was due, not from when a
		// publisher held up by slow answers got round to it: a stalled
		// server must show in the latency, not only in a lower rate.
		stamp := time.Now()
		if interval > 0 {
			due := ph.start.Add(time.Duration(k) * interval)
			if !due.Before(ph.deadline) || !sleepUntil(ctx, due) {
				return st
			}
			stamp = due
		}
		if !time.Now().Before(ph.deadline) {
			return st // no catching up after the end: what was not sent counts against the rate
		}
		body := inj.appendBody(make([]byte, 0, inj.size()), ph.base+k, pub, stamp.UnixNano())
		code, err := post(ctx, client, target, body)
		switch {
		case err != nil && ctx.Err() != nil:
			st.canceled++
			continue
		case err != nil:
			st.errs[errKind(err)]++
		default:
			st.byStatus[code]++
			if code/100 == 2 {
				st.accepted++
				ph.accepted.add(k)
			}
		}
		st.sent++
	}
	return st
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// post sends one event and reads the whole response, so the connection
// goes back to the pool.
func post(ctx context.Context, client *http.Client, target string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// errKind names a transport error for the report.
func errKind(err error) string {
	var ne net.Error
	var se statusError
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no local port available"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	default:
		return "other"
	}
}
