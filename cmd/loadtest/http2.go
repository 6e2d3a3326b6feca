package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// loadRoots returns the TLS configuration of the run's clients: the
// system's roots, plus the certificates of caFile when given (a test
// server's self-signed certificate).
func loadRoots(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return &tls.Config{}, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: roots}, nil
}

// http2Transport returns a transport that speaks only HTTP/2 to u's scheme:
// over TLS (ALPN h2) for https, cleartext with prior knowledge (h2c) for
// http. It never falls back to HTTP/1.1, so what is measured is HTTP/2.
func http2Transport(scheme string, tc *tls.Config) *http.Transport {
	var p http.Protocols
	if scheme == "https" {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Transport{
		Protocols:          &p,
		TLSClientConfig:    tc.Clone(),
		DisableCompression: true,
		HTTP2:              &http.HTTP2Config{StrictMaxConcurrentRequests: true},
	}
}

// h2Conns hands out the HTTP/2 connections the listeners share: listener
// i of a replica uses connection i / perConn of that replica, each its own
// transport, so that a run of N listeners opens N / perConn connections
// per replica, like browsers with many EventSources each.
type h2Conns struct {
	perConn int
	tls     *tls.Config

	mu         sync.Mutex
	transports map[[2]int]*http.Transport // by replica and connection number
}

func newH2Conns(perConn int, tc *tls.Config) *h2Conns {
	return &h2Conns{perConn: perConn, tls: tc, transports: map[[2]int]*http.Transport{}}
}

// client returns the client of listener id on replica, whose target has
// scheme.
func (c *h2Conns) client(id, replicas, replica int, scheme string) *http.Client {
	key := [2]int{replica, id / replicas / c.perConn}
	c.mu.Lock()
	defer c.mu.Unlock()
	tr := c.transports[key]
	if tr == nil {
		tr = http2Transport(scheme, c.tls)
		c.transports[key] = tr
	}
	return &http.Client{Transport: tr}
}

// close closes every connection, once the listeners are closed.
func (c *h2Conns) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tr := range c.transports {
		tr.CloseIdleConnections()
	}
}

// streamCloser ends one HTTP/2 stream (RST_STREAM), leaving its
// connection to the other listeners.
type streamCloser struct {
	cancel context.CancelFunc
	body   interface{ Close() error }
}

func (s streamCloser) Close() error {
	s.cancel()
	return s.body.Close()
}

// connectH2Listener opens a stream on client, an HTTP/2 connection shared
// with other listeners, and returns once its first line has been read, as
// connectListener does.
func connectH2Listener(ctx context.Context, id, replica int, client *http.Client, target *url.URL, bufSize int, timeout time.Duration) (*listener, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The stream outlives ctx, which bounds only its start.
	life, end := context.WithCancel(context.Background())
	stop := context.AfterFunc(ctx, end)
	resp, err := client.Do(streamRequest(target).WithContext(life))
	if err != nil {
		end()
		return nil, cmpOr(err, ctx.Err())
	}
	l := &listener{id: id, replica: replica, conn: streamCloser{end, resp.Body}, r: bufio.NewReaderSize(resp.Body, bufSize), done: make(chan struct{})}
	if resp.StatusCode != http.StatusOK {
		_ = l.conn.Close()
		return nil, statusError{resp.StatusCode}
	}
	if _, err := l.readLine(); err != nil || !stop() {
		_ = l.conn.Close()
		return nil, cmpOr(fmt.Errorf("no first line: %w", cmpOrNil(err, ctx.Err())), nil)
	}
	return l, nil
}
