package server_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
	"event-dispatcher/pkg/tlscert"
)

// A connection that ends before its TLS handshake (a port scan, a load
// balancer's TCP probe) is logged at debug only: at the default level
// nobody can fill the logs by connecting. Before, net/http's line came at
// no level, written whatever LOG_LEVEL.
func TestTLSHandshakeErrorsLoggedAtDebug(t *testing.T) {
	certFile, keyFile, roots := ssetest.WriteCertificate(t, t.TempDir(), "dispatcher")
	certs, err := tlscert.New(certFile, keyFile, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	logs := &ssetest.LockedBuffer{}
	srv := ssetest.StartTLS(t, broadcast.Options{}, server.Options{Logger: zerolog.New(logs).Level(zerolog.DebugLevel)},
		certs.TLSConfig(), roots)
	for range 3 {
		c, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	ssetest.Eventually(t, 30*time.Second, "3 handshake errors logged", func() (bool, string) {
		return strings.Count(logs.String(), "TLS handshake error") == 3, logs.String()
	})
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, "TLS handshake error") && !strings.Contains(line, `"level":"debug"`) {
			t.Errorf("a failed handshake logged above debug: %s", line)
		}
	}
}
