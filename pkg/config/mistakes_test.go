package config

import (
	"slices"
	"strings"
	"testing"
)

func TestOrigins(t *testing.T) {
	ok := []struct {
		value string
		want  []string // nil: any origin
	}{
		{"*", nil},
		{" * ", nil},
		{"https://a.example", []string{"https://a.example"}},
		{"https://a.example/, HTTPS://B.Example:8443", []string{"https://a.example", "https://b.example:8443"}},
		{"https://a.example:443,http://b.example:80,http://c.example:8080", []string{"https://a.example", "http://b.example", "http://c.example:8080"}},
		{"http://[::1]:3000, https://a.example, https://a.example", []string{"http://[::1]:3000", "https://a.example"}},
		// As browsers send them: internationalised hosts in ASCII.
		{"https://Bücher.example, https://xn--bcher-kva.example:443", []string{"https://xn--bcher-kva.example"}},
		{"https://a_b.example,https://[::1]", []string{"https://a_b.example", "https://[::1]"}},
		{"capacitor://localhost", []string{"capacitor://localhost"}},
	}
	for _, tc := range ok {
		c, _, err := load(t, map[string]string{"CORS_ALLOWED_ORIGINS": tc.value})
		if err != nil {
			t.Errorf("%q: %v", tc.value, err)
			continue
		}
		if (c.AllowOrigins == nil) != (tc.want == nil) || !slices.Equal(c.AllowOrigins, tc.want) {
			t.Errorf("%q: AllowOrigins %q, want %q", tc.value, c.AllowOrigins, tc.want)
		}
	}
	// Accepted by releases before: they start, with a warning, as open or
	// closed as they were.
	risky := []struct {
		value string
		want  []string // nil: any origin
		says  string
	}{
		{"a.example", []string{}, "use scheme://host[:port]"},
		{"https://", []string{}, "use scheme://host[:port]"},
		{"https://a.example/app", []string{}, "no path"},
		{"https://a.example?x=1", []string{}, "no path, query"},
		{"https://user@a.example", []string{}, "no path, query or user"},
		{"https://a.example:99999", []string{}, `"99999" is not a port`},
		{"https://a.example:", []string{}, "use scheme://host[:port]"},
		{"https://*.a.example", []string{}, "wildcards are not supported; list each origin"},
		{"*,https://a.example", nil, "* in a list allows any origin"},
		{"https://a.example, *", nil, "* in a list allows any origin"},
		{"https://a.example,b.example", []string{"https://a.example"}, `"b.example" is not an origin`},
	}
	for _, tc := range risky {
		c, _, err := load(t, map[string]string{"CORS_ALLOWED_ORIGINS": tc.value})
		if err != nil {
			t.Errorf("%q: %v, want it to start", tc.value, err)
			continue
		}
		if (c.AllowOrigins == nil) != (tc.want == nil) || !slices.Equal(c.AllowOrigins, tc.want) {
			t.Errorf("%q: AllowOrigins %q, want %q", tc.value, c.AllowOrigins, tc.want)
		}
		found := false
		for _, r := range c.Risks() {
			found = found || (r.Name == "CORS_ALLOWED_ORIGINS" && strings.Contains(r.Why, tc.says))
		}
		if !found {
			t.Errorf("%q: risks %v, want one for CORS_ALLOWED_ORIGINS saying …%s…", tc.value, c.Risks(), tc.says)
		}
	}
}

func TestParseErrorsSayWhatIsExpected(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"HEARTBEAT_INTERVAL", "5", `HEARTBEAT_INTERVAL: "5" is not a duration; use a number with a unit, such as 5s or 500ms`},
		{"SHUTDOWN_TIMEOUT", "soon", `SHUTDOWN_TIMEOUT: "soon" is not a duration; use a number with a unit, such as 5s or 500ms`},
		{"MAX_BODY_BYTES", "64k", `MAX_BODY_BYTES: "64k" is not a whole number of bytes; use digits only, such as 65536`},
		{"MAX_SUBSCRIBERS", "many", `MAX_SUBSCRIBERS: "many" is not a whole number; use digits only, such as 10000`},
	} {
		_, _, err := load(t, map[string]string{tc.name: tc.value})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s=%q: error %v, want %s", tc.name, tc.value, err, tc.want)
		}
	}
}

func TestNearMisses(t *testing.T) {
	env := []string{
		"HEARTBEAT_INTERVL=5s",     // a letter missing
		"HEARTBEAT_PERIOD=5s",      // our leading word
		"MAX_SUBSCRIBER=5",         // a letter missing
		"SHUTDOWN_TIMOEUT=5s",      // two letters swapped
		"log_level=debug",          // case
		"CORS_ORIGINS=https://a.b", // our leading word
		"PORTS=1",                  // one letter more in a short name
		"CLIENT_IP_HEADER=x",       // our leading words
		"TLS_CERT_FIEL=x",          // two letters swapped
		"TLS_KEYFILE=x",            // an underscore missing
		"GRPC_PROT=50051",          // two letters swapped
		// Not ours:
		"PORT=1", "HEARTBEAT_INTERVAL=5s", "HOST=x", "PATH=/bin", "HOME=/root", "MAX_HEAP=1", "LOG_DIR=/tmp",
		"GOMAXPROCS=2", "TERM=xterm", "LANG=C", "=weird", "NOEQUALS",
		"CLIENT_ID=x", "CLIENT_SECRET=x", "KUBERNETES_SERVICE_PORT=443", "AWS_REGION=eu-west-1",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt", "SSL_CERT_DIR=/etc/ssl/certs", // the trusted roots
		"GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=/etc/ssl/certs/ca-certificates.crt", "GRPC_GO_LOG_SEVERITY_LEVEL=info", // gRPC's own
	}
	got := map[string]string{}
	for _, m := range NearMisses(env) {
		got[m.Name] = m.Like
	}
	want := map[string]string{
		"HEARTBEAT_INTERVL": "HEARTBEAT_INTERVAL", "HEARTBEAT_PERIOD": "HEARTBEAT_INTERVAL",
		"MAX_SUBSCRIBER": "MAX_SUBSCRIBERS", "SHUTDOWN_TIMOEUT": "SHUTDOWN_TIMEOUT", "log_level": "LOG_LEVEL",
		"CORS_ORIGINS": "CORS_ALLOWED_ORIGINS", "PORTS": "PORT", "CLIENT_IP_HEADER": "CLIENT_IP_FIELD",
		"TLS_CERT_FIEL": "TLS_CERT_FILE", "TLS_KEYFILE": "TLS_KEY_FILE", "GRPC_PROT": "GRPC_PORT",
	}
	for name, like := range want {
		if got[name] != like {
			t.Errorf("%s: taken for %q, want %q", name, got[name], like)
		}
	}
	for name, like := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s taken for a near miss of %s", name, like)
		}
	}
}

// Names come from the struct tags: a new setting is covered with no list
// to update.
func TestNamesFromTags(t *testing.T) {
	names := Names()
	for _, v := range variables() {
		if !slices.Contains(names, v.name) {
			t.Errorf("Names() lacks %s", v.name)
		}
	}
	if len(names) != len(variables()) {
		t.Errorf("Names() = %q", names)
	}
}
