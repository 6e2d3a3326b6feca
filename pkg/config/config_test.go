package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"event-dispatcher/internal/ssetest"
)

// variable is one environment variable as declared on Config.
type variable struct{ name, def, desc string }

// variables lists Config's environment variables from its struct tags, so a
// new setting is covered by these tests without editing them.
func variables() []variable {
	var out []variable
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		f := t.Field(i)
		if name := f.Tag.Get("envconfig"); name != "" && f.Tag.Get("ignored") != "true" {
			out = append(out, variable{name, f.Tag.Get("default"), f.Tag.Get("desc")})
		}
	}
	return out
}

// cleanEnv unsets every variable for this test (restored afterwards), so
// the environment the tests run in cannot leak into them.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, v := range variables() {
		t.Setenv(v.name, "") // registers the restore
		if err := os.Unsetenv(v.name); err != nil {
			t.Fatal(err)
		}
	}
}

func load(t *testing.T, env map[string]string, args ...string) (Config, string, error) {
	t.Helper()
	cleanEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out bytes.Buffer
	c, err := Load(args, &out)
	return c, out.String(), err
}

// The tag scan the other tests rely on must find the settings at all.
func TestVariablesFound(t *testing.T) {
	var names []string
	for _, v := range variables() {
		names = append(names, v.name)
	}
	for _, want := range []string{"PORT", "LOG_LEVEL", "SHUTDOWN_TIMEOUT", "TRUSTED_PROXY_CIDRS"} {
		if !slices.Contains(names, want) {
			t.Errorf("tag scan found %q, not %s", names, want)
		}
	}
	if len(names) < 15 {
		t.Errorf("tag scan found only %d variables: %q", len(names), names)
	}
}

func TestDefaults(t *testing.T) {
	c, out, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if out != "" {
		t.Errorf("Load printed %q", out)
	}
	want := Config{
		Port: "3569", LogLevel: "info", LogFormat: "json", MaxBodyBytes: 65536,
		BodyReadTimeout: 10 * time.Second, CORSAllowedOrigins: []string{"*"}, HeartbeatInterval: 5 * time.Second,
		WriteTimeout: 10 * time.Second, SubscriberBufferBytes: 1 << 20, MaxSubscribers: 10000,
		PublishQueueSize: 16384, PublishQueueBytes: 64 << 20, MaxFanoutLag: time.Second, MaxStreamDuration: 0, ShutdownTimeout: 15 * time.Second,
		StrictJSON: true, AdminPort: "9569", DrainDelay: 0, GRPCPort: "off",
		BrokerChannel:       "event-dispatcher",
		UpstreamIdleTimeout: time.Minute,
		Level:               zerolog.InfoLevel,

		KinesisBufferBytes: 32 << 20, KinesisFlushInterval: time.Second,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\ngot  %+v\nwant %+v", c, want)
	}
	if c.Addr() != ":3569" || c.AdminAddr() != ":9569" {
		t.Errorf("Addr() = %q, AdminAddr() = %q", c.Addr(), c.AdminAddr())
	}
}

func TestEveryVariableParsed(t *testing.T) {
	certFile, keyFile, _ := ssetest.WriteCertificate(t, t.TempDir(), "config")
	env := map[string]string{
		"TLS_CERT_FILE":           " " + certFile,
		"TLS_KEY_FILE":            keyFile,
		"PORT":                    "8080",
		"LOG_LEVEL":               "DEBUG",
		"LOG_FORMAT":              "console",
		"MAX_BODY_BYTES":          "1024",
		"BODY_READ_TIMEOUT":       "3s",
		"CORS_ALLOWED_ORIGINS":    "https://a.example/, https://b.example",
		"HEARTBEAT_INTERVAL":      "0",
		"WRITE_TIMEOUT":           "250ms",
		"SUBSCRIBER_BUFFER_BYTES": "4096",
		"MAX_SUBSCRIBERS":         "7",
		"PUBLISH_QUEUE_SIZE":      "3",
		"PUBLISH_QUEUE_BYTES":     "100000",
		"MAX_FANOUT_LAG":          "250ms",
		"MAX_STREAM_DURATION":     "1h",
		"SHUTDOWN_TIMEOUT":        "2s",
		"CLIENT_IP_FIELD":         "user_ip",
		"TRUSTED_PROXY_CIDRS":     "10.1.2.3/8, 2001:db8::/32,",
		"LISTEN_TOKENS":           " token-one-0123456789, ,token-two-0123456789==",
		"LISTEN_JWT_SECRET":       "0123456789abcdef0123456789abcdef",
		"PUBLISH_RATE_PER_IP":     "2.5",
		"PUBLISH_TOKENS":          "pub-token-0123456789, ",
		"GRPC_PORT":               ":50051",
		"MAX_LISTENERS_PER_IP":    "3",
		"CLIENT_IP_ANONYMIZE":     "true",
		"STRICT_JSON":             "false",
		"ADMIN_PORT":              "OFF",
		"DRAIN_DELAY":             "5s",
		"BROKER_URL":              "rediss://user:pw@cache.example:6380/1",
		"BROKER_CHANNEL":          "ed-prod",
		"MAX_CONNECTIONS":         "5000",
		"ADMIN_HOST":              "[::1]",
		"MAX_CONNECTIONS_PER_IP":  "100",
		"UPSTREAM_URLS":           "https://stream.example/v2/stream/recentchange, http://u:p@edge.example:3569/events?type=play",
		"UPSTREAM_EVENT_TYPES":    "message, log",
		"UPSTREAM_HEADERS":        `{"x-api-key":"k: v, w"}`,
		"UPSTREAM_USER_AGENT":     "relay/1 (ops@example.org)",
		"UPSTREAM_IDLE_TIMEOUT":   "15s",

		"KINESIS_STREAM_NAME":         " events-archive ",
		"KINESIS_PARTITION_KEY_FIELD": "session_id",
		"KINESIS_BUFFER_BYTES":        "2097152",
		"KINESIS_FLUSH_INTERVAL":      "250ms",
	}
	for _, v := range variables() {
		if _, ok := env[v.name]; !ok {
			t.Errorf("%s is not exercised by this test", v.name)
		}
	}
	c, _, err := load(t, env)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Port: "8080", LogLevel: "DEBUG", LogFormat: "console", MaxBodyBytes: 1024,
		BodyReadTimeout:    3 * time.Second,
		CORSAllowedOrigins: []string{"https://a.example/", " https://b.example"}, HeartbeatInterval: 0,
		WriteTimeout: 250 * time.Millisecond, SubscriberBufferBytes: 4096, MaxSubscribers: 7,
		PublishQueueSize: 3, PublishQueueBytes: 100000, MaxFanoutLag: 250 * time.Millisecond, MaxStreamDuration: time.Hour, ShutdownTimeout: 2 * time.Second,
		ClientIPField:     "user_ip",
		TrustedProxyCIDRs: []string{"10.1.2.3/8", " 2001:db8::/32", ""},
		StrictJSON:        false,
		BrokerURL:         "rediss://user:pw@cache.example:6380/1",
		BrokerChannel:     "ed-prod",
		Level:             zerolog.DebugLevel,
		AllowOrigins:      []string{"https://a.example", "https://b.example"},
		TrustedNets:       []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")},
		ListenTokens:      []string{"token-one-0123456789", "token-two-0123456789=="},
		ListenJWTSecret:   "0123456789abcdef0123456789abcdef",
		PublishRatePerIP:  2.5,
		PublishTokens:     []string{"pub-token-0123456789"},
		GRPCPort:          "50051",
		MaxListenersPerIP: 3,
		ClientIPAnonymize: true,
		AdminPort:         "off", DrainDelay: 5 * time.Second,
		MaxConnections: 5000, MaxConnectionsPerIP: 100, AdminHost: "::1",
		TLSCertFile: certFile, TLSKeyFile: keyFile,
		UpstreamURLs:        []string{"https://stream.example/v2/stream/recentchange", "http://u:p@edge.example:3569/events?type=play"},
		UpstreamEventTypes:  []string{"message", "log"},
		UpstreamHeaders:     `{"x-api-key":"k: v, w"}`,
		UpstreamHeader:      http.Header{"X-Api-Key": {"k: v, w"}},
		UpstreamUserAgent:   "relay/1 (ops@example.org)",
		UpstreamIdleTimeout: 15 * time.Second,

		KinesisStreamName: "events-archive", KinesisPartitionKeyField: "session_id",
		KinesisBufferBytes: 2 << 20, KinesisFlushInterval: 250 * time.Millisecond,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("parsed:\ngot  %+v\nwant %+v", c, want)
	}
	// Every variable must have moved away from its default, or the value
	// above does not prove it is read.
	def, _, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	cv, dv := reflect.ValueOf(c), reflect.ValueOf(def)
	for i := range cv.NumField() {
		name := cv.Type().Field(i).Tag.Get("envconfig")
		if name != "" && reflect.DeepEqual(cv.Field(i).Interface(), dv.Field(i).Interface()) {
			t.Errorf("%s still has its default value", name)
		}
	}
}

func TestPortForms(t *testing.T) {
	for _, p := range []string{"0", "1", "65535", ":35420", " 35420 "} {
		c, _, err := load(t, map[string]string{"PORT": p})
		if err != nil {
			t.Errorf("PORT=%q: %v", p, err)
			continue
		}
		if want := strings.TrimPrefix(strings.TrimSpace(p), ":"); c.Port != want || c.Addr() != ":"+want {
			t.Errorf("PORT=%q: Port %q, Addr %q", p, c.Port, c.Addr())
		}
	}
}

func TestInvalidValues(t *testing.T) {
	cases := []struct{ name, value string }{
		{"PORT", "abc"},
		{"PORT", "70000"},
		{"PORT", "65536"},
		{"PORT", "-1"},
		{"PORT", "080"},
		{"PORT", "+80"},
		{"PORT", ""},
		{"PORT", "localhost:80"},
		{"LOG_LEVEL", "verbose"},
		{"LOG_LEVEL", "trace"},
		{"LOG_LEVEL", "disabled"},
		{"LOG_LEVEL", ""},
		{"LOG_FORMAT", "xml"},
		{"LOG_FORMAT", ""},
		{"MAX_BODY_BYTES", "1"},
		{"MAX_BODY_BYTES", "0"},
		{"MAX_BODY_BYTES", "-5"},
		{"MAX_BODY_BYTES", "lots"},
		{"MAX_BODY_BYTES", "64k"},
		{"BODY_READ_TIMEOUT", "0"},
		{"BODY_READ_TIMEOUT", "-1s"},
		{"BODY_READ_TIMEOUT", "10"},
		{"HEARTBEAT_INTERVAL", "banana"},
		{"HEARTBEAT_INTERVAL", "-1s"},
		{"HEARTBEAT_INTERVAL", "5"},
		{"WRITE_TIMEOUT", "0"},
		{"WRITE_TIMEOUT", "-2s"},
		{"SUBSCRIBER_BUFFER_BYTES", "4095"},
		{"SUBSCRIBER_BUFFER_BYTES", "1MB"},
		{"MAX_SUBSCRIBERS", "0"},
		{"MAX_SUBSCRIBERS", "-1"},
		{"MAX_SUBSCRIBERS", "many"},
		{"PUBLISH_QUEUE_SIZE", "0"},
		{"PUBLISH_QUEUE_SIZE", "1.5"},
		{"PUBLISH_QUEUE_BYTES", "1000"}, // below one event of the largest size
		{"PUBLISH_QUEUE_BYTES", "-1"},
		{"PUBLISH_QUEUE_SIZE", "100000000"},
		{"MAX_FANOUT_LAG", "0"},
		{"MAX_FANOUT_LAG", "1ms"},
		{"MAX_FANOUT_LAG", "2m"},
		{"MAX_BODY_BYTES", "16777217"},
		{"HEARTBEAT_INTERVAL", "1ns"},
		{"WRITE_TIMEOUT", "1ns"},
		{"SUBSCRIBER_BUFFER_BYTES", "65536"}, // the default MAX_BODY_BYTES event would not fit
		{"MAX_STREAM_DURATION", "-1m"},
		{"MAX_STREAM_DURATION", "forever"},
		{"SHUTDOWN_TIMEOUT", "0"},
		{"SHUTDOWN_TIMEOUT", "soon"},
		{"CLIENT_IP_FIELD", `user"ip`},
		{"CLIENT_IP_FIELD", `user\ip`},
		{"CLIENT_IP_FIELD", "user\nip"},
		{"CLIENT_IP_FIELD", "user\tip"},
		{"CLIENT_IP_FIELD", "user\x7fip"},
		{"TRUSTED_PROXY_CIDRS", "nonsense"},
		{"TRUSTED_PROXY_CIDRS", "10.0.0.1"},
		{"TRUSTED_PROXY_CIDRS", "10.0.0.0/8,bad"},
		{"TRUSTED_PROXY_CIDRS", "10.0.0.0/33"},
		{"LISTEN_TOKENS", "short"},
		{"LISTEN_TOKENS", "good-token-0123456789,has space 0123456789"},
		{"LISTEN_TOKENS", "token&with-query-chars=1"},
		{"LISTEN_TOKENS", "token=with-inner-equals"},
		{"LISTEN_JWT_SECRET", "only-31-bytes-0123456789abcdef!"},
		{"LISTEN_TOKENS", ","},                                      // set, but no token: would leave the streams open
		{"LISTEN_TOKENS", " , "},                                    //
		{"LISTEN_TOKENS", "aaaaaaaaaaaaaaaaaaaaaaaa"},               // long enough, but guessable
		{"LISTEN_TOKENS", "good-token-0123456789,abababababababab"}, //
		{"LISTEN_JWT_SECRET", strings.Repeat(" ", 40)},              // blank: anyone could sign tokens
		{"LISTEN_JWT_SECRET", strings.Repeat("ab", 20)},             //
		{"GRPC_PORT", "grpc"},
		{"GRPC_PORT", "65536"},
		{"GRPC_PORT", "3569"}, // PORT's default
		{"PUBLISH_TOKENS", "short"},
		{"PUBLISH_TOKENS", "token&with-query-chars=1"},
		{"PUBLISH_TOKENS", " , "},                      // set, but no token: would leave POST /events open
		{"PUBLISH_TOKENS", "aaaaaaaaaaaaaaaaaaaaaaaa"}, // long enough, but guessable
		{"PUBLISH_RATE_PER_IP", "-1"},
		{"PUBLISH_RATE_PER_IP", "NaN"},
		{"PUBLISH_RATE_PER_IP", "fast"},
		{"PUBLISH_RATE_PER_IP", "1e9"},
		{"MAX_LISTENERS_PER_IP", "-1"},
		{"MAX_CONNECTIONS", "-1"},
		{"ADMIN_HOST", "admin.example"},
		{"ADMIN_HOST", "10.0.0"},
		{"MAX_CONNECTIONS_PER_IP", "100000001"},
		{"MAX_LISTENERS_PER_IP", "2.5"},
		{"CLIENT_IP_ANONYMIZE", "maybe"},
		{"KINESIS_STREAM_NAME", "my stream"},
		{"KINESIS_STREAM_NAME", strings.Repeat("s", 129)},
		{"KINESIS_STREAM_NAME", "arn:aws:kinesis:eu-west-1:123:stream/x"},
		{"KINESIS_STREAM_NAME", "arn:aws:s3:::bucket"},
		{"KINESIS_PARTITION_KEY_FIELD", `session"id`},
		{"KINESIS_BUFFER_BYTES", "1048575"},
		{"KINESIS_BUFFER_BYTES", "32MB"},
		{"KINESIS_FLUSH_INTERVAL", "0"},
		{"KINESIS_FLUSH_INTERVAL", "2m"},
		{"BROKER_URL", "http://cache:6379"},
		{"BROKER_URL", "cache:6379"},
		{"BROKER_URL", "redis://cache:6379/db"},
		{"BROKER_URL", "nats://a:4222,redis://b:6379"},
		{"BROKER_CHANNEL", ""},
		{"BROKER_CHANNEL", "two words"},
		{"UPSTREAM_URLS", "ftp://feed.example/x"},
		{"UPSTREAM_URLS", "stream.example/v2"},
		{"UPSTREAM_URLS", "https:///path"},
		{"UPSTREAM_URLS", "https://a.example/s#frag"},
		{"UPSTREAM_URLS", "https://a.example/s,https://a.example/s"},
		{"UPSTREAM_URLS", "https://u:1@a.example/s,https://u:2@a.example/s"}, // alike once the credentials are hidden
		{"UPSTREAM_EVENT_TYPES", "a\nb"},
		{"UPSTREAM_HEADERS", "X-Api-Key: k"},
		{"UPSTREAM_HEADERS", `{"X-Api-Key": 5}`},
		{"UPSTREAM_HEADERS", `{"bad name":"v"}`},
		{"UPSTREAM_HEADERS", `{"X-Api-Key":"line\nbreak"}`},
		{"UPSTREAM_HEADERS", `{"Last-Event-ID":"1"}`},
		{"UPSTREAM_HEADERS", `{"User-Agent":"x"}`},
		{"UPSTREAM_USER_AGENT", "bad\x01agent"},
		{"UPSTREAM_IDLE_TIMEOUT", "0"},
		{"UPSTREAM_IDLE_TIMEOUT", "2h"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			_, _, err := load(t, map[string]string{tc.name: tc.value})
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.name, tc.value)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tc.name+": ") {
				t.Errorf("error %q does not start with the variable name", msg)
			}
			for _, v := range variables() {
				// Whole words: MAX_CONNECTIONS is part of MAX_CONNECTIONS_PER_IP.
				if v.name != tc.name && regexp.MustCompile(`\b`+v.name+`\b`).MatchString(msg) {
					t.Errorf("error %q also names %s", msg, v.name)
				}
			}
		})
	}
}

func TestBrokerChannelMustBeANATSSubjectWithNATS(t *testing.T) {
	for _, ch := range []string{"events.*", "events.>", "a..b", ".a"} {
		_, _, err := load(t, map[string]string{"BROKER_URL": "nats://n1:4222,nats://n2:4222", "BROKER_CHANNEL": ch})
		if err == nil || !strings.HasPrefix(err.Error(), "BROKER_CHANNEL: ") {
			t.Errorf("BROKER_CHANNEL=%q with NATS: error %v, want one naming BROKER_CHANNEL", ch, err)
		}
	}
}

func TestLoggedConfigHidesBrokerPassword(t *testing.T) {
	c, _, err := load(t, map[string]string{"BROKER_URL": "redis://app:hunter2@cache:6379/0"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Object("config", c).Send()
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), `"BROKER_URL":"redis://app:xxxxx@cache:6379/0"`) {
		t.Errorf("logged %s; want BROKER_URL with its password hidden", buf.Bytes())
	}

	// NATS reads a user without a password as a token.
	c, _, err = load(t, map[string]string{"BROKER_URL": "nats://s3cr3t-token@n1:4222,nats://n2:4222"})
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	log.Info().Object("config", c).Send()
	if strings.Contains(buf.String(), "s3cr3t") || !strings.Contains(buf.String(), `"BROKER_URL":"nats://xxxxx@n1:4222,nats://n2:4222"`) {
		t.Errorf("logged %s; want the NATS token hidden", buf.Bytes())
	}
}

func TestLoggedConfigHidesUpstreamSecrets(t *testing.T) {
	c, _, err := load(t, map[string]string{
		"UPSTREAM_URLS":    "https://relay:hunter2@edge.example/events?access_token=tok-0123456789&type=play",
		"UPSTREAM_HEADERS": `{"Authorization":"Bearer sekrit-value"}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Object("config", c).Send()
	for _, secret := range []string{"hunter2", "relay:", "tok-0123456789", "sekrit"} {
		if strings.Contains(buf.String(), secret) {
			t.Errorf("%q is in the log line: %s", secret, buf.Bytes())
		}
	}
	for _, want := range []string{`"UPSTREAM_URLS":"https://edge.example/events?access_token=redacted&type=play"`, `"UPSTREAM_HEADERS":"Authorization: [redacted]"`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log line lacks %s: %s", want, buf.Bytes())
		}
	}
	_, _, err = load(t, map[string]string{"UPSTREAM_URLS": "ftp://relay:hunter2@edge.example/x", "UPSTREAM_HEADERS": `{"X-Key":"sekrit\u0001"}`})
	if err == nil || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("error %v: want a refusal that does not show the secrets", err)
	}
}

// A CORS list that is set but names no origin must fail closed: either be
// refused or allow no origin, never turn into "any origin" (nil).
func TestCORSEmptyListFailsClosed(t *testing.T) {
	for _, v := range []string{"", " , "} {
		c, _, err := load(t, map[string]string{"CORS_ALLOWED_ORIGINS": v})
		switch {
		case err != nil:
			if !strings.HasPrefix(err.Error(), "CORS_ALLOWED_ORIGINS: ") {
				t.Errorf("CORS_ALLOWED_ORIGINS=%q: error %q does not name the variable", v, err)
			}
		case c.AllowOrigins == nil:
			t.Errorf("CORS_ALLOWED_ORIGINS=%q is accepted and allows any origin (AllowOrigins nil)", v)
		}
	}
}

// A field name that is not valid UTF-8 would make every event invalid
// UTF-8, which JSON consumers reject.
func TestClientIPFieldInvalidUTF8(t *testing.T) {
	_, _, err := load(t, map[string]string{"CLIENT_IP_FIELD": "user_ip\xff"})
	if err == nil {
		t.Fatal("CLIENT_IP_FIELD with invalid UTF-8 is accepted; every event would then carry an invalid UTF-8 key")
	}
	if !strings.Contains(err.Error(), "CLIENT_IP_FIELD") {
		t.Errorf("error %q does not name CLIENT_IP_FIELD", err)
	}
}

// A listener queue must hold the largest event, or that one event would
// drop every listener as too slow.
func TestSubscriberBufferMustHoldTheLargestEvent(t *testing.T) {
	_, _, err := load(t, map[string]string{"MAX_BODY_BYTES": "8192", "SUBSCRIBER_BUFFER_BYTES": "8192"})
	if err == nil || !strings.HasPrefix(err.Error(), "SUBSCRIBER_BUFFER_BYTES: ") {
		t.Fatalf("err = %v, want SUBSCRIBER_BUFFER_BYTES refused", err)
	}
	if _, _, err := load(t, map[string]string{"MAX_BODY_BYTES": "8192", "SUBSCRIBER_BUFFER_BYTES": "8300",
		"CLIENT_IP_FIELD": "user_ip"}); err != nil {
		t.Fatalf("a queue with room for the largest event was refused: %v", err)
	}
}

// Every invalid variable is reported at once, so one restart fixes them all.
func TestAllErrorsReported(t *testing.T) {
	_, _, err := load(t, map[string]string{"PORT": "abc", "LOG_FORMAT": "xml", "MAX_SUBSCRIBERS": "0", "TRUSTED_PROXY_CIDRS": "x"})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, name := range []string{"PORT", "LOG_FORMAT", "MAX_SUBSCRIBERS", "TRUSTED_PROXY_CIDRS"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
}

func TestPortFlag(t *testing.T) {
	for _, args := range [][]string{{"-port", ":35420"}, {"-port", "35420"}, {"-port=35420"}, {"--port", "35420"}} {
		c, _, err := load(t, map[string]string{"PORT": "1234"}, args...)
		if err != nil {
			t.Errorf("%q: %v", args, err)
			continue
		}
		if c.Port != "35420" || c.Addr() != ":35420" {
			t.Errorf("%q: Port %q, Addr %q, want 35420", args, c.Port, c.Addr())
		}
	}
}

func TestPortFlagInvalid(t *testing.T) {
	_, _, err := load(t, nil, "-port", "abc")
	if err == nil || !strings.HasPrefix(err.Error(), "-port: ") {
		t.Errorf("-port abc: error %v, want one naming -port", err)
	}
	// A valid flag does not hide an invalid PORT it overrides: the flag wins.
	if _, _, err := load(t, map[string]string{"PORT": "abc"}, "-port", "80"); err != nil {
		t.Errorf("-port 80 with PORT=abc: %v", err)
	}
}

// -admin-port overrides ADMIN_PORT (a second copy on one machine), and an
// invalid value is reported under the flag's name.
func TestAdminPortFlag(t *testing.T) {
	for arg, want := range map[string]string{"9570": "9570", ":9570": "9570", "0": "0", "OFF": "off"} {
		c, _, err := load(t, map[string]string{"ADMIN_PORT": "9569"}, "-admin-port", arg)
		if err != nil || c.AdminPort != want {
			t.Errorf("-admin-port %q: AdminPort %q, err %v; want %q", arg, c.AdminPort, err, want)
		}
	}
	if c, _, _ := load(t, nil, "-admin-port", "off"); c.AdminAddr() != "" {
		t.Errorf("-admin-port off: admin address %q, want none", c.AdminAddr())
	}
	for _, args := range [][]string{{"-admin-port", "abc"}, {"-port", "3570", "-admin-port", "3570"}} {
		if _, _, err := load(t, nil, args...); err == nil || !strings.HasPrefix(err.Error(), "-admin-port: ") {
			t.Errorf("%q: error %v, want one naming -admin-port", args, err)
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{{"-port"}, {"-verbose"}, {"serve"}, {"-port", "80", "extra"}} {
		_, _, err := load(t, nil, args...)
		if err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: error %v, want a usage error", args, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			// Invalid values must not stop -h from answering.
			_, out, err := load(t, map[string]string{"PORT": "abc"}, arg)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("error %v, want flag.ErrHelp", err)
			}
			if !strings.Contains(out, "-port") {
				t.Errorf("usage does not mention -port:\n%s", out)
			}
			lines := strings.Split(out, "\n")
			for _, v := range variables() {
				i := slices.IndexFunc(lines, func(l string) bool {
					f := strings.Fields(l)
					return len(f) > 0 && f[0] == v.name
				})
				if i < 0 {
					t.Errorf("usage does not list %s:\n%s", v.name, out)
					continue
				}
				rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[i]), v.name))
				if v.def != "" {
					if f := strings.Fields(rest); len(f) == 0 || f[0] != v.def {
						t.Errorf("usage line %q does not show default %q", lines[i], v.def)
					}
					rest = strings.TrimSpace(strings.TrimPrefix(rest, v.def))
				}
				if rest != v.desc {
					t.Errorf("usage line %q: meaning %q, want %q", lines[i], rest, v.desc)
				}
			}
		})
	}
}

// The start-up log shows the effective value of every variable.
func TestLoggedConfig(t *testing.T) {
	c, _, err := load(t, map[string]string{"HEARTBEAT_INTERVAL": "1m30s", "CLIENT_IP_FIELD": "user_ip"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Object("config", c).Send()
	var line struct{ Config map[string]any }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %s", err, buf.Bytes())
	}
	for _, v := range variables() {
		if _, ok := line.Config[v.name]; !ok {
			t.Errorf("log line lacks %s: %s", v.name, buf.Bytes())
		}
	}
	for k, want := range map[string]string{"HEARTBEAT_INTERVAL": "1m30s", "PORT": "3569", "CLIENT_IP_FIELD": "user_ip", "SHUTDOWN_TIMEOUT": "15s", "ADMIN_PORT": "9569"} {
		if got := line.Config[k]; got != want {
			t.Errorf("%s logged as %v, want %q", k, got, want)
		}
	}
}

// Secrets are logged as set or not, never their value, and an invalid one
// is not echoed in the error either.
func TestSecretsNeverLogged(t *testing.T) {
	const token, key = "listener-secret-0123456789", "jwt-secret-0123456789abcdef0123456789"
	c, _, err := load(t, map[string]string{"LISTEN_TOKENS": token, "LISTEN_JWT_SECRET": key})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Object("config", c).Send()
	if strings.Contains(buf.String(), "secret-0123456789") {
		t.Errorf("a secret is in the log line: %s", buf.Bytes())
	}
	var line struct{ Config map[string]any }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"LISTEN_TOKENS", "LISTEN_JWT_SECRET"} {
		if got := line.Config[k]; got != "[redacted]" {
			t.Errorf("%s logged as %v, want [redacted]", k, got)
		}
	}
	_, _, err = load(t, map[string]string{"LISTEN_TOKENS": "bad secret-0123456789", "LISTEN_JWT_SECRET": "short-secret"})
	if err == nil || strings.Contains(err.Error(), "bad secret") || strings.Contains(err.Error(), "short-secret") {
		t.Errorf("error %v: want a refusal that does not show the secrets", err)
	}
}

func TestAdminPort(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"9000", ":9000"}, {":9000", ":9000"}, {"0", ":0"}, {"off", ""}, {" Off ", ""},
	} {
		cfg, _, err := load(t, map[string]string{"ADMIN_PORT": c.env})
		if err != nil || cfg.AdminAddr() != c.want {
			t.Errorf("ADMIN_PORT=%q: AdminAddr %q, %v; want %q", c.env, cfg.AdminAddr(), err, c.want)
		}
	}
	for _, env := range []map[string]string{
		{"ADMIN_PORT": "none"}, {"ADMIN_PORT": "70000"}, {"ADMIN_PORT": ""},
		{"ADMIN_PORT": "8080", "PORT": "8080"},
	} {
		if _, _, err := load(t, env); err == nil || !strings.Contains(err.Error(), "ADMIN_PORT") {
			t.Errorf("%v: error %v, want one naming ADMIN_PORT", env, err)
		}
	}
	if _, _, err := load(t, map[string]string{"ADMIN_PORT": "0", "PORT": "0"}); err != nil {
		t.Errorf("ADMIN_PORT=0 and PORT=0 pick two free ports: %v", err)
	}
	// Releases before the admin port ran with PORT=9569: that keeps
	// starting, the admin listener off, with a warning.
	cfg, _, err := load(t, map[string]string{"PORT": "9569"})
	if err != nil || cfg.AdminAddr() != "" {
		t.Errorf("PORT=9569: AdminAddr %q, %v; want it started without the admin listener", cfg.AdminAddr(), err)
	}
	if r := cfg.Risks(); len(r) != 1 || r[0].Name != "ADMIN_PORT" {
		t.Errorf("PORT=9569: risks %v, want one naming ADMIN_PORT", r)
	}
}

func TestDrainDelayNotNegative(t *testing.T) {
	if _, _, err := load(t, map[string]string{"DRAIN_DELAY": "-1s"}); err == nil || !strings.Contains(err.Error(), "DRAIN_DELAY") {
		t.Errorf("DRAIN_DELAY=-1s: error %v, want one naming DRAIN_DELAY", err)
	}
}

// A shutdown no longer than WRITE_TIMEOUT was refused by a release: such a
// configuration starts again, with a warning, since the shutdown itself
// cuts the last writes at SHUTDOWN_TIMEOUT.
func TestShortShutdownTimeoutStartsWithAWarning(t *testing.T) {
	for _, env := range []map[string]string{
		{"SHUTDOWN_TIMEOUT": "10s", "WRITE_TIMEOUT": "10s"},
		{"SHUTDOWN_TIMEOUT": "5s"}, // WRITE_TIMEOUT's default is 10s
		{"SHUTDOWN_TIMEOUT": "10ms", "WRITE_TIMEOUT": "1h"},
	} {
		c, _, err := load(t, env)
		if err != nil {
			t.Errorf("%v: %v, want it accepted", env, err)
			continue
		}
		if r := c.Risks(); len(r) != 1 || r[0].Name != "SHUTDOWN_TIMEOUT" || !strings.Contains(r[0].Why, "WRITE_TIMEOUT") {
			t.Errorf("%v: risks %+v, want one naming SHUTDOWN_TIMEOUT and WRITE_TIMEOUT", env, r)
		}
	}
	c, _, err := load(t, map[string]string{"SHUTDOWN_TIMEOUT": "3s", "WRITE_TIMEOUT": "2s"})
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT 3s over WRITE_TIMEOUT 2s: %v", err)
	}
	if r := c.Risks(); len(r) != 0 {
		t.Errorf("SHUTDOWN_TIMEOUT 3s over WRITE_TIMEOUT 2s: risks %+v, want none", r)
	}
}

// TLS_CERT_FILE and TLS_KEY_FILE come together, and a pair that would not
// serve stops the start with the variable at fault named first.
func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := ssetest.WriteCertificate(t, dir, "a")
	otherCert, _, _ := ssetest.WriteCertificate(t, dir, "b")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name, cert, key, want string // want: the start of the error; "" accepts
	}{
		{"neither", "", "", ""},
		{"both", certFile, keyFile, ""},
		{"certificate alone", certFile, "", "TLS_KEY_FILE: must be set with TLS_CERT_FILE"},
		{"key alone", "", keyFile, "TLS_CERT_FILE: must be set with TLS_KEY_FILE"},
		{"certificate missing", missing, keyFile, "TLS_CERT_FILE: certificate file: open " + missing},
		{"key missing", certFile, missing, "TLS_KEY_FILE: key file: open " + missing},
		{"key of another certificate", otherCert, keyFile, "TLS_CERT_FILE, TLS_KEY_FILE: certificate and key: "},
		{"not PEM", garbage, keyFile, "TLS_CERT_FILE, TLS_KEY_FILE: certificate and key: "},
		{"swapped", keyFile, certFile, "TLS_CERT_FILE, TLS_KEY_FILE: certificate and key: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := load(t, map[string]string{"TLS_CERT_FILE": tc.cert, "TLS_KEY_FILE": tc.key})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == "" && c.TLS() != (tc.cert != ""):
				t.Errorf("TLS() = %v with TLS_CERT_FILE=%q", c.TLS(), tc.cert)
			case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
				t.Errorf("error %v, want it to start with %q", err, tc.want)
			}
		})
	}
}

func TestKinesisStreamByNameOrARN(t *testing.T) {
	for _, v := range []string{"a", "events.archive-2_b", "arn:aws:kinesis:eu-west-1:123456789012:stream/events", "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/e"} {
		c, _, err := load(t, map[string]string{"KINESIS_STREAM_NAME": v})
		if err != nil || c.KinesisStreamName != v {
			t.Errorf("KINESIS_STREAM_NAME=%q: %v, %q", v, err, c.KinesisStreamName)
		}
	}
}
