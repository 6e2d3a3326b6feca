package ssetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

// H2CClient returns a client that speaks only cleartext HTTP/2 with prior
// knowledge (h2c) to http:// URLs: its requests to one server share one
// connection. streamWindow, when positive, is the flow-control window it
// grants each stream, so that a stream it stops reading stalls the server
// after that many bytes instead of net/http's 4 MiB.
func H2CClient(t testing.TB, streamWindow int) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: streamWindow}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TLSClient returns a client that trusts roots and speaks HTTP/2 (ALPN h2)
// when the server offers it, HTTP/1.1 otherwise; streamWindow as for
// H2CClient.
func TLSClient(t testing.TB, roots *x509.CertPool, streamWindow int) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	tr := &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{RootCAs: roots},
		HTTP2:           &http.HTTP2Config{MaxReceiveBufferPerStream: streamWindow},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// StartTLS is Start serving HTTPS: the listener is wrapped by
// tls.NewListener with conf, as the service does with TLS_CERT_FILE. URL
// is https://…, and Client trusts roots and speaks HTTP/2.
func StartTLS(t testing.TB, hub broadcast.Options, srv server.Options, conf *tls.Config, roots *x509.CertPool) *Server {
	t.Helper()
	s := start(t, hub, srv, func(ln net.Listener, _ *http.Server) net.Listener { return tls.NewListener(ln, conf) })
	s.URL = "https://" + s.Addr
	s.Client = TLSClient(t, roots, 0)
	return s
}

// WriteCertificate writes a new self-signed certificate for localhost,
// 127.0.0.1 and ::1, named cn, and its key, as PEM files in dir; it returns
// their paths and a pool that trusts the certificate.
func WriteCertificate(t testing.TB, dir, cn string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// LockedBuffer is a bytes.Buffer that a logger on other goroutines may
// write while the test reads it.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
