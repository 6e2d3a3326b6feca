// Package tlscert serves the public port's certificate from PEM files and
// picks up a renewed pair (cert-manager, certbot) without a restart.
package tlscert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// What failed to load: errors from New and Check wrap one of these.
var (
	ErrCertFile = errors.New("certificate file")
	ErrKeyFile  = errors.New("key file")
	ErrPair     = errors.New("certificate and key")
)

// CheckEvery is how often, at most, the files are read again to look for a
// renewal: only when a client connects, so an idle server reads nothing.
const CheckEvery = 5 * time.Second

// Reloader holds the certificate read from a pair of PEM files and reads
// them again, at most every CheckEvery, when a TLS handshake asks for it.
// A new pair that does not load (a key that does not match, a file half
// written) is logged once and ignored: the last good certificate stays.
type Reloader struct {
	certFile, keyFile string
	every             time.Duration
	log               zerolog.Logger

	cur atomic.Pointer[pair]

	mu      sync.Mutex // held by the one handshake that checks the files
	checked time.Time
	refused []byte // cert and key contents last refused, so they are logged once

	failures atomic.Uint64 // renewals refused: distinct file contents that did not load
}

// pair is a loaded certificate and the file contents it came from.
type pair struct {
	cert     *tls.Certificate
	certPEM  []byte
	keyPEM   []byte
	notAfter time.Time
	subject  string
}

// New loads certFile and keyFile; the error names the file at fault.
// every is how often, at most, the files are checked for a renewal; zero
// means CheckEvery.
func New(certFile, keyFile string, every time.Duration, log zerolog.Logger) (*Reloader, error) {
	if every <= 0 {
		every = CheckEvery
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, every: every, log: log, checked: time.Now()}
	certPEM, keyPEM, err := r.read()
	if err != nil {
		return nil, err
	}
	p, err := load(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	r.cur.Store(p)
	return r, nil
}

// Check loads certFile and keyFile once, as New would, and discards them:
// for validating a configuration. The error names the file at fault.
func Check(certFile, keyFile string) error {
	_, err := New(certFile, keyFile, 0, zerolog.Nop())
	return err
}

// TLSConfig returns a server configuration serving r's certificate, with
// HTTP/2 and HTTP/1.1 offered by ALPN, TLS 1.2 at least.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: r.GetCertificate,
	}
}

// GetCertificate returns the current certificate, first reloading the
// files if they have not been checked for r.every. It never fails once New
// succeeded.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload()
	return r.cur.Load().cert, nil
}

// NotAfter is the expiry of the certificate being served.
func (r *Reloader) NotAfter() time.Time { return r.cur.Load().notAfter }

// ReloadFailures counts the renewals refused so far: each distinct content
// of the files that did not load once.
func (r *Reloader) ReloadFailures() uint64 { return r.failures.Load() }

// maybeReload reads the files again when they are due for a check and no
// other handshake is checking them; handshakes meanwhile use the current
// certificate.
func (r *Reloader) maybeReload() {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) < r.every {
		return
	}
	r.checked = now
	certPEM, keyPEM, err := r.read()
	cur := r.cur.Load()
	switch {
	case err != nil:
		r.refuse(append([]byte(err.Error()), 0), err)
		return
	case bytes.Equal(certPEM, cur.certPEM) && bytes.Equal(keyPEM, cur.keyPEM):
		r.refused = nil
		return
	}
	p, err := load(certPEM, keyPEM)
	if err != nil {
		r.refuse(append(certPEM, keyPEM...), err)
		return
	}
	r.cur.Store(p)
	r.refused = nil
	r.log.Info().Str("subject", p.subject).Time("not_after", p.notAfter).Msg("TLS certificate reloaded")
}

// refuse logs why the files on disk are not served, once for each content.
func (r *Reloader) refuse(content []byte, err error) {
	if bytes.Equal(content, r.refused) {
		return
	}
	r.refused = content
	r.failures.Add(1)
	cur := r.cur.Load()
	r.log.Error().Err(err).Str("serving_subject", cur.subject).Time("serving_not_after", cur.notAfter).
		Msg("TLS certificate files changed but do not load; still serving the previous certificate")
}

func (r *Reloader) read() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(r.certFile); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCertFile, err)
	}
	if keyPEM, err = os.ReadFile(r.keyFile); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	return certPEM, keyPEM, nil
}

func load(certPEM, keyPEM []byte) (*pair, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPair, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCertFile, err)
	}
	cert.Leaf = leaf
	return &pair{cert: &cert, certPEM: certPEM, keyPEM: keyPEM, notAfter: leaf.NotAfter, subject: leaf.Subject.String()}, nil
}
