package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
)

// readmeCurlHTTP2 returns the curl commands of the README's HTTP/2 section.
func readmeCurlHTTP2(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## HTTP/2 and HTTPS\n")
	if !ok {
		t.Fatal("README has no HTTP/2 and HTTPS section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var out []string
	for line := range strings.SplitSeq(section, "\n") {
		if cmd, ok := strings.CutPrefix(line, "    curl "); ok {
			out = append(out, "curl "+cmd)
		}
	}
	if len(out) != 4 {
		t.Fatalf("README HTTP/2 section: %d curl commands, want 4 (listen and send, h2c and TLS): %q", len(out), out)
	}
	return out
}

// The README's curl examples work against the binary, over HTTP/2: a
// listener with --http2-prior-knowledge (h2c) or --http2 over TLS with the
// certificate of TLS_CERT_FILE receives what the matching POST sends. With
// TLS, -healthcheck probes the instance over HTTPS, and the admin port
// stays plain HTTP.
func TestReadmeCurlHTTP2Examples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("needs curl (.ci/run installs it): %v", err)
		}
		t.Skipf("needs curl (.ci/run installs it): %v; skipped outside CI", err)
	}
	cmds := readmeCurlHTTP2(t)
	certFile, keyFile, _ := ssetest.WriteCertificate(t, t.TempDir(), "localhost")
	for _, tc := range []struct {
		name   string
		scheme string
		env    []string
	}{
		{"h2c", "http://", []string{"PORT=0"}},
		{"tls", "https://", []string{"PORT=0", "TLS_CERT_FILE=" + certFile, "TLS_KEY_FILE=" + keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProcess(t, nil, tc.env...)
			rec, base := p.listening(t)
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			port := u.Port()
			var listen, send string
			for _, c := range cmds {
				if !strings.Contains(c, tc.scheme) {
					continue
				}
				c = strings.ReplaceAll(c, "localhost:3569", net.JoinHostPort("localhost", port))
				c = strings.ReplaceAll(c, "cert.pem", certFile)
				if strings.Contains(c, " -N ") {
					listen = c
				} else {
					send = c
				}
			}
			if listen == "" || send == "" {
				t.Fatalf("README: no listen and send pair for %s in %q", tc.scheme, cmds)
			}

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			lc := exec.CommandContext(ctx, "bash", "-c", "exec "+listen+" -v")
			lout, err := lc.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			lerr := newLogSink()
			lc.Stderr = lerr
			if err := lc.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = lc.Process.Kill(); _ = lc.Wait() }()
			lines := bufio.NewScanner(lout)
			waitLine := func(prefix string) {
				t.Helper()
				for lines.Scan() {
					if strings.HasPrefix(strings.TrimPrefix(lines.Text(), "\ufeff"), prefix) {
						return
					}
				}
				t.Fatalf("listener ended before a line %q: %v; stderr:\n%s", prefix, lines.Err(), lerr.String())
			}
			waitLine("retry:")
			// curl prints the status line on stderr, maybe after the body's
			// first bytes on stdout.
			ssetest.Eventually(t, 30*time.Second, "the listener answered over HTTP/2", func() (bool, string) {
				return strings.Contains(lerr.String(), "< HTTP/2 200"), lerr.String()
			})

			out, err := exec.CommandContext(ctx, "bash", "-c", send+" -v").CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("< HTTP/2 204")) {
				t.Fatalf("%s: %v, want HTTP/2 204:\n%s", send, err, out)
			}
			waitLine(`data: {"event_name":"START"}`)

			if tc.scheme == "https://" {
				// The admin port stays plain HTTP.
				resp, err := http.Get(baseURL(t, rec["admin_addr"]) + "/livez")
				if err != nil {
					t.Fatalf("admin port over plain HTTP: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.TLS != nil {
					t.Errorf("admin /livez: %d, TLS %v; want 200 over plain HTTP", resp.StatusCode, resp.TLS != nil)
				}
				hc := startProcess(t, []string{"-healthcheck", "-port", port}, tc.env[1:]...)
				if code := hc.exit(t, 30*time.Second); code != 0 {
					t.Errorf("-healthcheck with TLS: exit %d; stderr:\n%s", code, hc.stderr)
				}
			}
			_ = p.cmd.Process.Signal(os.Interrupt)
			p.exitedCleanly(t, 30*time.Second, "a curl stream")
		})
	}
}
