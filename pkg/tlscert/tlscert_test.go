package tlscert_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/tlscert"
)

// servedBy returns the common name of the certificate the server presents
// to a new HTTP/2 connection, which must carry a GET /health answered 200.
func servedBy(t *testing.T, url string, roots *x509.CertPool) string {
	t.Helper()
	client := ssetest.TLSClient(t, roots, 0)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET /health over TLS: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET /health over TLS: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].Subject.CommonName
}

// copyFile replaces dst with src's content, as a renewal does.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A certificate renewed on disk is served to new connections without a
// restart; a renewal that does not load (a key of another certificate, a
// file half written) is logged once and the previous certificate kept,
// until the files make a good pair again.
func TestRenewedCertificateServedWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, oldRoots := ssetest.WriteCertificate(t, dir, "first")
	newCert, newKey, newRoots := ssetest.WriteCertificate(t, dir, "second")
	_, otherKey, _ := ssetest.WriteCertificate(t, dir, "other")
	logs := &ssetest.LockedBuffer{}
	const every = 20 * time.Millisecond
	certs, err := tlscert.New(certFile, keyFile, every, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	srv := ssetest.StartTLS(t, broadcast.Options{}, server.Options{Certificate: certs}, certs.TLSConfig(), oldRoots)
	metrics := func() (expiry, failures float64) {
		m := ssetest.Scrape(t, srv.Admin+"/metrics")
		return m.Samples["event_dispatcher_tls_certificate_expiry_timestamp_seconds"], m.Samples["event_dispatcher_tls_certificate_reload_failures_total"]
	}
	if expiry, failures := metrics(); int64(expiry) != certs.NotAfter().Unix() || certs.NotAfter().IsZero() || failures != 0 {
		t.Errorf("metrics: expiry %v, failures %v; want %d and 0", expiry, failures, certs.NotAfter().Unix())
	}
	// A listener on the first certificate's connection lives through the
	// renewal: connections are not cut.
	listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	if got := servedBy(t, srv.URL, oldRoots); got != "first" {
		t.Fatalf("served %q, want first", got)
	}

	// Half a renewal: the new certificate with the old key.
	copyFile(t, newCert, certFile)
	ssetest.Eventually(t, 30*time.Second, "the mismatched pair logged", func() (bool, string) {
		if got := servedBy(t, srv.URL, oldRoots); got != "first" {
			t.Fatalf("served %q from a pair that does not match, want first kept", got)
		}
		return bytes.Count([]byte(logs.String()), []byte("do not load")) > 0, logs.String()
	})
	time.Sleep(5 * every) // more checks of the same bad pair
	servedBy(t, srv.URL, oldRoots)
	if n := bytes.Count([]byte(logs.String()), []byte("do not load")); n != 1 {
		t.Errorf("the same bad pair logged %d times, want once:\n%s", n, logs)
	}
	if _, failures := metrics(); failures != 1 {
		t.Errorf("reload failures metric %v, want 1", failures)
	}

	// The renewal completes.
	copyFile(t, newKey, keyFile)
	ssetest.Eventually(t, 30*time.Second, "the renewed certificate served", func() (bool, string) {
		client := ssetest.TLSClient(t, newRoots, 0)
		defer client.CloseIdleConnections()
		resp, err := client.Get(srv.URL + "/health")
		if err != nil {
			var uerr x509.UnknownAuthorityError
			if errors.As(err, &uerr) {
				return false, "still the old certificate"
			}
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName == "second", resp.TLS.PeerCertificates[0].Subject.CommonName
	})
	if !bytes.Contains([]byte(logs.String()), []byte("TLS certificate reloaded")) {
		t.Errorf("no reload logged:\n%s", logs)
	}

	renewed := certs.NotAfter()

	// A key that matches nothing: the renewed certificate stays.
	copyFile(t, otherKey, keyFile)
	time.Sleep(5 * every)
	if got := servedBy(t, srv.URL, newRoots); got != "second" {
		t.Errorf("served %q after a bad key, want second kept", got)
	}
	if expiry, failures := metrics(); int64(expiry) != renewed.Unix() || failures != 2 {
		t.Errorf("metrics: expiry %v, failures %v; want %d and 2", expiry, failures, renewed.Unix())
	}

	ev := []byte(`{"after":"renewal"}`)
	srv.Publish(t, ev)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got := listener.NextData(t, ctx); got != string(ev) {
		t.Errorf("listener opened before the renewal: got %q, want %q", got, ev)
	}
}

// The configuration offers HTTP/2 and HTTP/1.1, and nothing older than
// TLS 1.2.
func TestTLSConfigOffersHTTP2(t *testing.T) {
	certFile, keyFile, roots := ssetest.WriteCertificate(t, t.TempDir(), "alpn")
	certs, err := tlscert.New(certFile, keyFile, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := ssetest.StartTLS(t, broadcast.Options{}, server.Options{}, certs.TLSConfig(), roots)
	for _, tc := range []struct {
		offer []string
		want  string
	}{{[]string{"h2", "http/1.1"}, "h2"}, {[]string{"http/1.1"}, "http/1.1"}} {
		conn, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: roots, NextProtos: tc.offer, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != tc.want {
			t.Errorf("client offering %q: negotiated %q, want %q", tc.offer, got, tc.want)
		}
		conn.Close()
	}
	if _, err := tls.Dial("tcp", srv.Addr, &tls.Config{RootCAs: roots, MaxVersion: tls.VersionTLS11, ServerName: "localhost"}); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
}
