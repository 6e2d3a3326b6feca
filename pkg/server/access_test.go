package server_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

const (
	listenToken = "listen-token-0123456789abcdef"
	listenKey   = "listen-jwt-key-0123456789abcdef0123456789"
)

func signJWT(t testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// listenerJWTs are tokens a dashboard's backend might hand out, good and bad.
type listenerJWTs struct {
	valid, expired, wrongKey, algNone, tampered, noExp string
}

func makeJWTs(t testing.TB) listenerJWTs {
	t.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	valid := signJWT(t, jwt.SigningMethodHS256, []byte(listenKey), jwt.MapClaims{"exp": exp, "sub": "dashboard"})
	parts := strings.Split(valid, ".")
	forged := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"exp":%d,"sub":"admin"}`, exp))
	return listenerJWTs{
		valid:    valid,
		expired:  signJWT(t, jwt.SigningMethodHS256, []byte(listenKey), jwt.MapClaims{"exp": time.Now().Add(-time.Minute).Unix()}),
		wrongKey: signJWT(t, jwt.SigningMethodHS256, []byte("some-other-key-0123456789abcdef012345"), jwt.MapClaims{"exp": exp}),
		algNone:  signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"exp": exp}),
		tampered: parts[0] + "." + forged + "." + parts[2],
		noExp:    signJWT(t, jwt.SigningMethodHS256, []byte(listenKey), jwt.MapClaims{"sub": "dashboard"}),
	}
}

func startWithListenerAuth(t testing.TB, logger zerolog.Logger) *ssetest.Server {
	t.Helper()
	return ssetest.Start(t, broadcast.Options{}, server.Options{
		Logger: logger,
		Access: access.Policy{Listeners: access.NewAuth([]string{listenToken}, []byte(listenKey))},
	})
}

func bearer(token string) http.Header { return http.Header{"Authorization": {"Bearer " + token}} }

// A listener with a good token, in the header or the query, gets the
// stream and its events; without one, or with a bad one, 401 that says only
// missing or invalid. Publishing stays open.
func TestListenerToken(t *testing.T) {
	srv := startWithListenerAuth(t, zerolog.Logger{})
	jwts := makeJWTs(t)

	t.Run("accepted", func(t *testing.T) {
		for _, tc := range []struct {
			name, path string
			header     http.Header
		}{
			{"static token in the header", "/events", bearer(listenToken)},
			{"static token in the query", "/events?access_token=" + listenToken, nil},
			{"JWT in the header", "/events", bearer(jwts.valid)},
			{"JWT in the query", "/events?access_token=" + url.QueryEscape(jwts.valid), nil},
			{"lower-case scheme, alias path", "/event-dispatcher", http.Header{"Authorization": {"bearer " + listenToken}}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := ssetest.Subscribe(t, srv.Client, srv.URL+tc.path, tc.header)
				ev := sessionMessage(t, string(ssetest.Fixture(t, "start.json")), tc.name)
				srv.Publish(t, ev) // no token needed to publish
				if got := s.NextData(t, within(t, 10*time.Second)); got != string(ev) {
					t.Errorf("received %q, want %q", got, ev)
				}
			})
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, path string
			header     http.Header
			want       string
		}{
			{"no token", "/events", nil, "missing token"},
			{"no token, alias path", "/event-dispatcher", nil, "missing token"},
			{"empty query parameter", "/events?access_token=", nil, "missing token"},
			{"wrong static token", "/events", bearer(listenToken + "x"), "invalid token"},
			{"expired JWT", "/events", bearer(jwts.expired), "invalid token"},
			{"JWT without exp", "/events", bearer(jwts.noExp), "invalid token"},
			{"JWT signed with another key", "/events", bearer(jwts.wrongKey), "invalid token"},
			{"JWT with alg none", "/events?access_token=" + jwts.algNone, nil, "invalid token"},
			{"JWT with a tampered payload", "/events", bearer(jwts.tampered), "invalid token"},
			{"Basic credentials", "/events", http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+listenToken))}}, "invalid token"},
			{"bad header beats a good query", "/events?access_token=" + listenToken, bearer("nope"), "invalid token"},
			{"good token without the Bearer scheme", "/events", http.Header{"Authorization": {listenToken}}, "invalid token"},
			{"good JWT without the Bearer scheme", "/events", http.Header{"Authorization": {jwts.valid}}, "invalid token"},
			{"Bearer without a token", "/events?access_token=" + listenToken, http.Header{"Authorization": {"Bearer"}}, "invalid token"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, tc.path, tc.header, nil)
				if err != nil {
					t.Fatal(err)
				}
				wantError(t, r, http.StatusUnauthorized, tc.want, nil)
				challenge := r.Header.Get("WWW-Authenticate")
				if !strings.HasPrefix(challenge, "Bearer ") {
					t.Errorf("WWW-Authenticate %q, want a Bearer challenge", challenge)
				}
				if invalid := strings.Contains(challenge, `error="invalid_token"`); invalid != (tc.want == "invalid token") {
					t.Errorf("WWW-Authenticate %q for a %s", challenge, tc.want)
				}
			})
		}
		if h, _ := srv.Health(t); h.Listeners != 0 {
			t.Errorf("%d listeners subscribed after refusals only", h.Listeners)
		}
	})

	t.Run("preflight allows the Authorization header", func(t *testing.T) {
		r, err := srv.Do(within(t, 10*time.Second), http.MethodOptions, "/events", http.Header{
			"Origin": {"https://dashboard.example"}, "Access-Control-Request-Method": {"GET"},
			"Access-Control-Request-Headers": {"authorization"},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusNoContent {
			t.Errorf("preflight status %d, want 204 without a token", r.Status)
		}
		if !strings.Contains(strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")), "authorization") {
			t.Errorf("Access-Control-Allow-Headers %q lacks Authorization", r.Header.Get("Access-Control-Allow-Headers"))
		}
	})
}

// At debug level every request is logged, with its query: no token, good
// or bad, may appear in the log, however it was sent.
func TestListenerTokensNeverLogged(t *testing.T) {
	var logs lockedBuffer
	logger := zerolog.New(&logs).Level(zerolog.DebugLevel)
	srv := ssetest.Start(t, broadcast.Options{Logger: logger}, server.Options{
		Logger: logger,
		Access: access.Policy{Listeners: access.NewAuth([]string{listenToken}, []byte(listenKey))},
	})
	jwts := makeJWTs(t)
	wrong := "wrong-token-guess-0123456789"
	secrets := map[string]string{"static token": listenToken, "JWT": jwts.valid, "expired JWT": jwts.expired, "wrong token": wrong}

	for _, s := range []*ssetest.Stream{
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events?session=abc&access_token="+listenToken, nil),
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events?access%5Ftoken="+url.QueryEscape(jwts.valid)+"&session=def", nil),
		ssetest.Subscribe(t, srv.Client, srv.URL+"/events", bearer(listenToken)),
	} {
		s.Close()
	}
	for _, tc := range []struct {
		path   string
		header http.Header
	}{
		{"/events?access_token=" + wrong, nil},
		{"/events?access_token=" + jwts.expired, nil},
		{"/events", bearer(wrong)},
		{"/event-dispatcher?access_token=" + wrong + "&access_token=" + listenToken, nil},
		{"/api/events?access_token=" + listenToken, nil}, // a token where none is needed
		{"/events?x=1;access_token=" + listenToken, nil}, // a separator the check does not split on
		{"/events?ACCESS_TOKEN=" + listenToken, nil},     // another spelling
		{"/events?token=" + jwts.valid, nil},             // another name
		{"/events?" + listenToken, nil},                  // no name at all
	} {
		r, err := srv.Do(within(t, 10*time.Second), http.MethodGet, tc.path, tc.header, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status == http.StatusOK {
			t.Fatalf("GET %s: 200, want a refusal", tc.path)
		}
	}
	ssetest.Eventually(t, 10*time.Second, "every stream logged as ended", func() (bool, string) {
		return strings.Count(logs.String(), `"listener disconnected"`) == 3, logs.String()
	})

	out := logs.String()
	for what, secret := range secrets {
		if strings.Contains(out, secret) || strings.Contains(out, url.QueryEscape(secret)) {
			t.Errorf("the %s appears in the debug log:\n%s", what, out)
		}
	}
	// The log still says what was asked, minus any value.
	for _, want := range []string{`"query":"session=REDACTED&access_token=REDACTED"`, `"query":"access%5Ftoken=REDACTED&session=REDACTED"`, `"query":"x=REDACTED;access_token=REDACTED"`, `"status":401`, `"level":"debug"`} {
		if !strings.Contains(out, want) {
			t.Errorf("debug log lacks %s:\n%s", want, out)
		}
	}
	if n := strings.Count(out, `"message":"request"`); n != 12 {
		t.Errorf("%d request lines logged, want 12:\n%s", n, out)
	}
}

// A stream's log lines, when it opens and when it ends, name the client
// as the service resolved it (behind the proxy), truncated with
// CLIENT_IP_ANONYMIZE as events are: never the proxy's address, never the
// client's full one.
func TestStreamLogLinesNameTheAnonymizedClient(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	// One logger for the hub and the server at info, as the service runs.
	log := zerolog.New(logs).Level(zerolog.InfoLevel)
	srv := ssetest.Start(t, broadcast.Options{Logger: log}, server.Options{
		Logger: log, ClientIP: viaProxy(), Access: access.Policy{AnonymizeIP: true},
	})
	ssetest.Subscribe(t, srv.Client, srv.URL+"/events", forwardedFor("203.0.113.77"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Hub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	ssetest.Eventually(t, 10*time.Second, "the stream-end line", func() (bool, string) {
		return len(logs.records(t, "listener disconnected")) == 1, logs.String()
	})
	for _, msg := range []string{"listener connected", "listener disconnected"} {
		recs := logs.records(t, msg)
		if len(recs) != 1 || recs[0]["client_ip"] != "203.0.113.0" {
			t.Errorf("%q lines %v, want one with client_ip 203.0.113.0", msg, recs)
		}
	}
	for _, leak := range []string{"203.0.113.77", "127.0.0.1"} {
		if strings.Contains(logs.String(), leak) {
			t.Errorf("the log holds %s:\n%s", leak, logs.String())
		}
	}
}

// With CLIENT_IP_ANONYMIZE, the address written into events is truncated:
// IPv4 to /24, IPv6 to /48, an IPv4-mapped IPv6 address as IPv4, whether it
// comes from X-Forwarded-For or is the peer itself.
func TestAnonymizedClientIP(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		ClientIPField: "user_ip", ClientIP: viaProxy(), Access: access.Policy{AnonymizeIP: true},
	})
	listener := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	for _, tc := range []struct{ forwarded, want string }{
		{"203.0.113.77", "203.0.113.0"},
		{"2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"},
		{"::ffff:198.51.100.9", "198.51.100.0"},
		{"[2001:db8:1:2::9]:4711", "2001:db8:1::"},
		{"", "127.0.0.0"}, // no X-Forwarded-For: the peer
	} {
		var h http.Header
		if tc.forwarded != "" {
			h = forwardedFor(tc.forwarded)
		}
		r, err := srv.Do(within(t, 10*time.Second), http.MethodPost, "/api/events", h, []byte(`{"user_ip":"1.2.3.4","n":1}`))
		if err != nil || r.Status != http.StatusNoContent {
			t.Fatalf("POST: %v %d %s", err, r.Status, r.Body)
		}
		want := `{"n":1,"user_ip":"` + tc.want + `"}`
		if got := listener.NextData(t, within(t, 10*time.Second)); got != want {
			t.Errorf("client %q: listener got %s, want %s", tc.forwarded, got, want)
		}
	}
}
