package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"event-dispatcher/internal/ssetest"
)

// The built binary at LOG_LEVEL=debug, with listener tokens and a JWT key
// set: the start-up line, access log, listener and shutdown lines never
// hold a token or the key, and the stream still needs a token.
func TestSecretsNeverLoggedAtDebug(t *testing.T) {
	const token, key = "listen-token-abcdefghijklmnop", "jwt-key-abcdefghijklmnopqrstuvwxyz0123"
	p := startProcess(t, []string{"-port", "0"}, "LOG_LEVEL=debug", "LISTEN_TOKENS=other-token-0123456789abc,"+token, "LISTEN_JWT_SECRET="+key)
	_, base := p.listening(t)
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string, header http.Header) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = header
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			buf := make([]byte, 64)
			if _, err := resp.Body.Read(buf); err != nil && err != io.EOF { // the first line; closing the body ends the stream
				t.Fatalf("GET %s: %v", path, err)
			}
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path   string
		header http.Header
		want   int
	}{
		{"/events?access_token=" + token, nil, http.StatusOK},
		{"/events?access_token=" + url.QueryEscape(signed), nil, http.StatusOK},
		{"/events", http.Header{"Authorization": {"Bearer " + token}}, http.StatusOK},
		{"/events", nil, http.StatusUnauthorized},
		{"/events?access_token=" + token + "x", nil, http.StatusUnauthorized},
	} {
		if got := get(tc.path, tc.header); got != tc.want {
			t.Errorf("GET %s: status %d, want %d", tc.path, got, tc.want)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(t, 30*time.Second); code != 0 {
		t.Errorf("exit code %d; stderr:\n%s", code, p.stderr)
	}
	out := p.stdout.String() + p.stderr.String()
	if n := len(p.stdout.records("request")); n != 5 {
		t.Errorf("%d access-log lines, want 5:\n%s", n, out)
	}
	for what, secret := range map[string]string{"token": token, "JWT": signed, "JWT key": key} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the output:\n%s", what, out)
		}
	}
}

// A listener refused with 401 leaves a line saying why (never the token),
// once per reason and client per minute however often it retries.
func TestRefusedListenerReasonLogged(t *testing.T) {
	const key = "jwt-key-abcdefghijklmnopqrstuvwxyz0123"
	p := startProcess(t, []string{"-port", "0"}, "LISTEN_JWT_SECRET="+key)
	_, base := p.listening(t)
	sign := func(method jwt.SigningMethod, k any, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(method, claims).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	future := time.Now().Add(time.Hour).Unix()
	tokens := map[string]string{
		"JWT expired":                "Bearer " + sign(jwt.SigningMethodHS256, []byte(key), jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix()}),
		"JWT without exp":            "Bearer " + sign(jwt.SigningMethodHS256, []byte(key), jwt.MapClaims{"sub": "x"}),
		"JWT algorithm none refused": "Bearer " + sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"exp": future}),
		"JWT signature invalid (not signed with LISTEN_JWT_SECRET)": "Bearer " + sign(jwt.SigningMethodHS256, []byte(key+"x"), jwt.MapClaims{"exp": future}),
		"missing token": "",
	}
	for range 3 { // retries: still one line per reason
		for _, authz := range tokens {
			req, err := http.NewRequest(http.MethodGet, base+"/events", nil)
			if err != nil {
				t.Fatal(err)
			}
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
		}
	}
	ssetest.Eventually(t, 30*time.Second, "a line per reason", func() (bool, string) {
		return len(p.stdout.records("listener refused: 401 (logged once per reason and client per minute)")) >= len(tokens), p.stdout.String()
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.exitedCleanly(t, 30*time.Second, "nothing")
	got := map[string]int{}
	for _, rec := range p.stdout.records("listener refused: 401 (logged once per reason and client per minute)") {
		got[rec["reason"].(string)]++
		if rec["client_ip"] != "127.0.0.1" {
			t.Errorf("line %v: want client_ip 127.0.0.1", rec)
		}
	}
	for reason, authz := range tokens {
		if got[reason] != 1 {
			t.Errorf("reason %q logged %d times, want once: %v", reason, got[reason], got)
		}
		if tok := strings.TrimPrefix(authz, "Bearer "); tok != "" && strings.Contains(p.stdout.String(), tok) {
			t.Errorf("the token refused for %q appears in the log", reason)
		}
	}
}

// A misspelt listener secret stops the start instead of a warning: the
// streams it was meant to close would otherwise be open. With a secret set
// correctly, a misspelt second one is only warned about: the streams are
// closed either way.
func TestMisspeltListenerSecretStopsTheStart(t *testing.T) {
	const token = "listen-token-abcdefghijklmnop"
	for _, name := range []string{"LISTEN_TOKEN", "LISTENER_TOKENS", "listen_tokens", "LISTEN_JWT_SECRETS", "LISTEN_JWT_KEY"} {
		t.Run(name, func(t *testing.T) {
			p := startProcess(t, []string{"-port", "0"}, name+"="+token)
			if code := p.exit(t, 30*time.Second); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			stderr := p.stderr.String()
			if !strings.Contains(stderr, name+": not a variable of the service (did you mean LISTEN_") || strings.Contains(stderr, token) {
				t.Errorf("stderr does not name %s and a listener secret, or shows the value:\n%s", name, stderr)
			}
			if out := strings.TrimSpace(p.stdout.String()); out != "" {
				t.Errorf("wrote to stdout before exiting (should not have started): %s", out)
			}
		})
	}
	t.Run("one secret set", func(t *testing.T) {
		p := startProcess(t, []string{"-port", "0"}, "LISTEN_TOKENS="+token, "LISTEN_JWT_SECRETS=jwt-key-abcdefghijklmnopqrstuvwxyz0123")
		_, base := p.listening(t)
		warns := p.stdout.records("environment variable not used by the service; a typo?")
		if len(warns) != 1 || warns[0]["variable"] != "LISTEN_JWT_SECRETS" {
			t.Errorf("warnings %v, want one for LISTEN_JWT_SECRETS", warns)
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/events")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET /events without a token: %d, want 401", resp.StatusCode)
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		p.exit(t, 30*time.Second)
	})
}
