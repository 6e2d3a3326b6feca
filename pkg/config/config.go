// Package config reads the service's settings from environment variables
// (no prefix) and validates them once, before anything listens.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/kelseyhightower/envconfig"
	"github.com/rs/zerolog"

	"event-dispatcher/pkg/brokerurl"
	"event-dispatcher/pkg/tlscert"
)

// Config holds every setting. The struct tags are the single source of the
// variable names, defaults and descriptions printed by -h.
type Config struct {
	Port                  string        `envconfig:"PORT" default:"3569" desc:"listen port (the -port flag overrides it); 0 picks a free port" json:"PORT"`
	LogLevel              string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error" json:"LOG_LEVEL"`
	LogFormat             string        `envconfig:"LOG_FORMAT" default:"json" desc:"json, or console for humans" json:"LOG_FORMAT"`
	MaxBodyBytes          int64         `envconfig:"MAX_BODY_BYTES" default:"65536" desc:"largest accepted POST body in bytes (2 to 16777216; SUBSCRIBER_BUFFER_BYTES must hold one event of this size, 59 bytes more)" json:"MAX_BODY_BYTES"`
	BodyReadTimeout       time.Duration `envconfig:"BODY_READ_TIMEOUT" default:"10s" desc:"time allowed to read one POST body or gRPC request message" json:"BODY_READ_TIMEOUT"`
	CORSAllowedOrigins    []string      `envconfig:"CORS_ALLOWED_ORIGINS" default:"*" desc:"comma-separated allowed origins, or *" json:"CORS_ALLOWED_ORIGINS"`
	HeartbeatInterval     time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"5s" desc:"SSE comment keep-alive period; 0 disables" json:"HEARTBEAT_INTERVAL"`
	WriteTimeout          time.Duration `envconfig:"WRITE_TIMEOUT" default:"10s" desc:"a listener whose socket accepts no bytes for this long is dropped" json:"WRITE_TIMEOUT"`
	SubscriberBufferBytes int           `envconfig:"SUBSCRIBER_BUFFER_BYTES" default:"1048576" desc:"bytes queued for one listener before it is dropped as too slow" json:"SUBSCRIBER_BUFFER_BYTES"`
	MaxSubscribers        int           `envconfig:"MAX_SUBSCRIBERS" default:"10000" desc:"concurrent listeners; beyond it new ones get 503; at most 90 % of MAX_CONNECTIONS" json:"MAX_SUBSCRIBERS"`
	PublishQueueSize      int           `envconfig:"PUBLISH_QUEUE_SIZE" default:"16384" desc:"events waiting for fan-out before POSTs get 503" json:"PUBLISH_QUEUE_SIZE"`
	PublishQueueBytes     int64         `envconfig:"PUBLISH_QUEUE_BYTES" default:"67108864" desc:"bytes of events waiting for fan-out before POSTs get 503 (64 MiB)" json:"PUBLISH_QUEUE_BYTES"`
	MaxFanoutLag          time.Duration `envconfig:"MAX_FANOUT_LAG" default:"1s" desc:"when the oldest event waiting for fan-out is older than this, POSTs get 503 at once (10ms to 1m)" json:"MAX_FANOUT_LAG"`
	MaxStreamDuration     time.Duration `envconfig:"MAX_STREAM_DURATION" default:"0" desc:"end each stream after about this long (±15% jitter); clients reconnect; 0 = never" json:"MAX_STREAM_DURATION"`
	ShutdownTimeout       time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"15s" desc:"grace period after SIGTERM/SIGINT (after DRAIN_DELAY); the process exits within it, cutting a listener still taking its last events" json:"SHUTDOWN_TIMEOUT"`
	ClientIPField         string        `envconfig:"CLIENT_IP_FIELD" desc:"when set (e.g. user_ip), each event gets this top-level field set to the client IP" json:"CLIENT_IP_FIELD"`
	TrustedProxyCIDRs     []string      `envconfig:"TRUSTED_PROXY_CIDRS" desc:"comma-separated CIDRs whose X-Forwarded-For is believed" json:"TRUSTED_PROXY_CIDRS"`
	StrictJSON            bool          `envconfig:"STRICT_JSON" default:"true" desc:"refuse (400) numbers beyond double range and lone surrogate escapes (I-JSON, RFC 7493); false accepts any JSON" json:"STRICT_JSON"`
	AdminPort             string        `envconfig:"ADMIN_PORT" default:"9569" desc:"operators' port: GET /metrics, /livez, /readyz, /debug/pprof/; off disables it; never expose it publicly" json:"ADMIN_PORT"`
	AdminHost             string        `envconfig:"ADMIN_HOST" desc:"address the admin port binds to, e.g. 127.0.0.1 or the pod's IP; empty: every interface, so in-cluster scrapers and probes reach it" json:"ADMIN_HOST"`
	DrainDelay            time.Duration `envconfig:"DRAIN_DELAY" default:"0" desc:"after SIGTERM/SIGINT, time health answers 503 draining while still serving, before the listener closes" json:"DRAIN_DELAY"`

	// Access control and abuse limits (package access). Secrets are never logged.
	ListenTokens      []string `envconfig:"LISTEN_TOKENS" secret:"true" desc:"comma-separated listener tokens; when set, GET /events needs one (Authorization: Bearer, or ?access_token=)" json:"LISTEN_TOKENS"`
	ListenJWTSecret   string   `envconfig:"LISTEN_JWT_SECRET" secret:"true" desc:"HS256 key (at least 32 bytes): an unexpired JWT signed with it (exp required) is also a listener token" json:"LISTEN_JWT_SECRET"`
	PublishRatePerIP  float64  `envconfig:"PUBLISH_RATE_PER_IP" default:"0" desc:"sustained POSTs per second per client IP (burst 2x); beyond it 429; 0 = unlimited" json:"PUBLISH_RATE_PER_IP"`
	MaxListenersPerIP int      `envconfig:"MAX_LISTENERS_PER_IP" default:"0" desc:"concurrent streams per client IP; beyond it 429; 0 = all listener slots but 1 % kept for other addresses (503 beyond; no limit under 100 listeners)" json:"MAX_LISTENERS_PER_IP"`
	PublishTokens     []string `envconfig:"PUBLISH_TOKENS" secret:"true" desc:"comma-separated publisher tokens; when set, POST /events (CloudEvents) and gRPC PushEvent need one (Authorization: Bearer); the players' POST /metrics and /api/events stay open" json:"PUBLISH_TOKENS"`
	ClientIPAnonymize bool     `envconfig:"CLIENT_IP_ANONYMIZE" default:"false" desc:"truncate the CLIENT_IP_FIELD address: IPv4 to /24, IPv6 to /48" json:"CLIENT_IP_ANONYMIZE"`

	// Connection caps on the public port (package connlimit): no client can
	// use up the descriptors. 0 derives the cap from the descriptor limit.
	MaxConnections      int `envconfig:"MAX_CONNECTIONS" default:"0" desc:"TCP connections held on the public and gRPC ports together; past it an idle one of the address holding the most is closed, else a request in flight of the address holding the most (never a stream), else the new one; 0 = the descriptor limit less 10% (at least 64) for the rest" json:"MAX_CONNECTIONS"`
	MaxConnectionsPerIP int `envconfig:"MAX_CONNECTIONS_PER_IP" default:"0" desc:"TCP connections one client IP (IPv6: its /64) holds on those ports, same rule (an HTTP/2 SSE stream beyond its connection's first counts as one more); TRUSTED_PROXY_CIDRS peers are exempt; 0 = half of MAX_CONNECTIONS, at least MAX_SUBSCRIBERS + 10 % (within MAX_CONNECTIONS)" json:"MAX_CONNECTIONS_PER_IP"`

	// Scale-out: replicas share events through a broker (pkg/broker).
	BrokerURL     string `envconfig:"BROKER_URL" secret:"true" desc:"empty: one instance, in memory; redis://[user:pass@]host:port[/db], rediss://… (TLS) or nats://host:port[,nats://…]: replicas share every event through it; with credentials, a secret" json:"BROKER_URL"`
	BrokerChannel string `envconfig:"BROKER_CHANNEL" default:"event-dispatcher" desc:"Redis channel or NATS subject the replicas share" json:"BROKER_CHANNEL"`

	// HTTPS on the public port (package tlscert); the admin port stays plain HTTP.
	TLSCertFile string `envconfig:"TLS_CERT_FILE" desc:"PEM certificate (chain) for the public port; with TLS_KEY_FILE, it serves HTTPS with HTTP/2 and HTTP/1.1; renewed files are picked up without a restart" json:"TLS_CERT_FILE"`
	TLSKeyFile  string `envconfig:"TLS_KEY_FILE" desc:"PEM private key of TLS_CERT_FILE; both or neither" json:"TLS_KEY_FILE"`
	// Upstream SSE feeds relayed like POSTs (pkg/upstream). Header values and URL credentials are secrets.
	UpstreamURLs        []string      `envconfig:"UPSTREAM_URLS" desc:"comma-separated http(s):// SSE URLs to follow for the life of the process; each event whose data is one JSON object is published as if POSTed; with BROKER_URL, set it on ONE replica only" json:"UPSTREAM_URLS"`
	UpstreamEventTypes  []string      `envconfig:"UPSTREAM_EVENT_TYPES" desc:"comma-separated SSE event types to take from upstreams; empty takes all (no event: field is type message)" json:"UPSTREAM_EVENT_TYPES"`
	UpstreamHeaders     string        `envconfig:"UPSTREAM_HEADERS" secret:"true" desc:"extra request headers for the upstreams, a JSON object: {\"Authorization\":\"Bearer …\"}; values are secrets" json:"UPSTREAM_HEADERS"`
	UpstreamUserAgent   string        `envconfig:"UPSTREAM_USER_AGENT" desc:"User-Agent sent upstream; default event-dispatcher/<version>; public feeds (Wikimedia) want name/version (contact)" json:"UPSTREAM_USER_AGENT"`
	UpstreamIdleTimeout time.Duration `envconfig:"UPSTREAM_IDLE_TIMEOUT" default:"60s" desc:"an upstream connection that brings no byte (not even a heartbeat) for this long is abandoned and reopened" json:"UPSTREAM_IDLE_TIMEOUT"`
	// Forwarding to Amazon Kinesis Data Streams (pkg/kinesis). Region,
	// credentials and endpoint come from the standard AWS variables.
	KinesisStreamName        string        `envconfig:"KINESIS_STREAM_NAME" desc:"when set, every event accepted here is also put to this Kinesis data stream (name or ARN); region and credentials from the standard AWS chain (AWS_REGION, task role, ...)" json:"KINESIS_STREAM_NAME"`
	KinesisPartitionKeyField string        `envconfig:"KINESIS_PARTITION_KEY_FIELD" desc:"top-level field (string or number) whose value is the record's partition key, e.g. session_id; empty or missing: a random key" json:"KINESIS_PARTITION_KEY_FIELD"`
	KinesisBufferBytes       int64         `envconfig:"KINESIS_BUFFER_BYTES" default:"33554432" desc:"events waiting for Kinesis, in bytes; when full (Kinesis slow or unreachable) new events are not forwarded, only counted" json:"KINESIS_BUFFER_BYTES"`
	KinesisFlushInterval     time.Duration `envconfig:"KINESIS_FLUSH_INTERVAL" default:"1s" desc:"a partial batch is put at least this often (full batches at once)" json:"KINESIS_FLUSH_INTERVAL"`

	// gRPC ingest and subscriptions (pkg/grpcapi).
	GRPCPort string `envconfig:"GRPC_PORT" default:"off" desc:"gRPC port (eventservice.EventService PushEvent and Subscribe, health, reflection), all interfaces; off disables it; 50051 is the usual one; 0 picks a free port" json:"GRPC_PORT"`

	// Derived by Load from the raw values above.
	UpstreamHeader http.Header    `ignored:"true" json:"-"`
	Level          zerolog.Level  `ignored:"true" json:"-"`
	AllowOrigins   []string       `ignored:"true" json:"-"` // nil means any origin
	TrustedNets    []netip.Prefix `ignored:"true" json:"-"`
}

// Sanity limits: beyond them a value is a typo, not a deployment.
const (
	maxBody  = 16 << 20
	maxCount = 1_000_000
	// maxQueueBytes bounds PUBLISH_QUEUE_BYTES far above any sensible
	// value, so a typo cannot promise more memory than a machine has.
	maxQueueBytes = 64 << 30
	minTick       = 10 * time.Millisecond
	// frameOverhead is what a frame adds to an event: "data: ", "\n\n" and,
	// with CLIENT_IP_FIELD, the quotes, colon, comma and the longest IP.
	frameOverhead = 8 + 6 + 45
)

// Addr is the address to listen on, all interfaces.
func (c Config) Addr() string { return ":" + c.Port }

// ErrVersion is returned by Load for -version: the caller prints its version.
var ErrVersion = errors.New("version requested")

// AdminAddr is the admin listener's address, on ADMIN_HOST (all
// interfaces when empty); "" when ADMIN_PORT is off.
func (c Config) AdminAddr() string {
	if c.AdminPort == AdminOff {
		return ""
	}
	return net.JoinHostPort(c.AdminHost, c.AdminPort)
}

// defaultAdminPort is ADMIN_PORT's default.
const defaultAdminPort = "9569"

// AdminOff is the ADMIN_PORT value that disables the admin listener, and
// the GRPC_PORT value (the default) that disables gRPC.
const AdminOff = "off"

// GRPCAddr is the gRPC listener's address, all interfaces; "" when
// GRPC_PORT is off.
func (c Config) GRPCAddr() string {
	if c.GRPCPort == AdminOff {
		return ""
	}
	return ":" + c.GRPCPort
}

// Load reads the environment, applies the -port flag from args and validates
// the result. It returns flag.ErrHelp after printing usage to out for -h,
// and ErrVersion for -version.
func Load(args []string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("event_dispatcher", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; usage goes to out, for -h only
	port := fs.String("port", "", `listen port, e.g. 35420 or ":35420" (overrides PORT)`)
	adminPort := fs.String("admin-port", "", "operators' port, e.g. 9570, 0 (a free one) or off (overrides ADMIN_PORT);\neach copy on one machine needs its own")
	version := fs.Bool("version", false, "print the version and exit")
	probe := fs.Bool("healthcheck", false, "as the first argument: GET /health of the instance on this host's port\n(PORT or -port after it) within 2 s; exit 0 on 200, else 1 with the reason")
	fs.Usage = func() {}
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		usage(out, fs)
		return c, err
	case err != nil:
		return c, fmt.Errorf("%w (-h lists flags and variables)", err)
	case *version:
		return c, ErrVersion
	case *probe:
		return c, errors.New("-healthcheck must be the first argument")
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return c, explain(pe)
		}
		return c, err
	}
	if *port != "" {
		c.Port = *port
	}
	if *adminPort != "" {
		c.AdminPort = *adminPort
	}
	return c, c.validate(*port != "", *adminPort != "")
}

// validate checks and normalises every setting; portFlag and adminFlag say
// that -port and -admin-port gave those values, so errors name the flag.
func (c *Config) validate(portFlag, adminFlag bool) error {
	var errs []error
	bad := func(name, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{name}, a...)...))
	}
	portName := "PORT"
	if portFlag {
		portName = "-port"
	}
	c.Port = strings.TrimPrefix(strings.TrimSpace(c.Port), ":")
	if p, err := strconv.ParseUint(c.Port, 10, 16); err != nil || c.Port != strconv.FormatUint(p, 10) {
		bad(portName, "%q is not a port number (0-65535)", c.Port)
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel))
	switch {
	case err != nil || (lvl != zerolog.DebugLevel && lvl != zerolog.InfoLevel && lvl != zerolog.WarnLevel && lvl != zerolog.ErrorLevel):
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", c.LogLevel)
	default:
		c.Level = lvl
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("LOG_FORMAT", "%q is not json or console", c.LogFormat)
	}
	if c.MaxBodyBytes < 2 || c.MaxBodyBytes > maxBody {
		bad("MAX_BODY_BYTES", "must be between 2 (the size of {}) and %d", maxBody)
	}
	positive := map[string]time.Duration{
		"BODY_READ_TIMEOUT": c.BodyReadTimeout, "WRITE_TIMEOUT": c.WriteTimeout, "SHUTDOWN_TIMEOUT": c.ShutdownTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			bad(name, "must be a positive duration, got %s", d)
		}
	}
	if c.HeartbeatInterval < 0 || (c.HeartbeatInterval > 0 && c.HeartbeatInterval < minTick) {
		bad("HEARTBEAT_INTERVAL", "must be 0 (off) or at least %s", minTick)
	}
	if c.WriteTimeout > 0 && c.WriteTimeout < minTick {
		bad("WRITE_TIMEOUT", "must be at least %s", minTick)
	}
	if c.MaxFanoutLag < minTick || c.MaxFanoutLag > time.Minute {
		bad("MAX_FANOUT_LAG", "must be between %s and 1m", minTick)
	}
	if c.MaxStreamDuration < 0 {
		bad("MAX_STREAM_DURATION", "must not be negative")
	}
	adminName := "ADMIN_PORT"
	if adminFlag {
		adminName = "-admin-port"
	}
	c.validateOps(bad, adminName)
	// One event of the largest size must fit in an empty listener queue, or
	// it would drop every listener as too slow.
	largest := int64(4096)
	if c.MaxBodyBytes <= maxBody { // else MAX_BODY_BYTES is reported instead
		largest = max(largest, c.MaxBodyBytes+int64(len(c.ClientIPField))+frameOverhead)
	}
	if int64(c.SubscriberBufferBytes) < largest {
		bad("SUBSCRIBER_BUFFER_BYTES", "must be at least %d bytes: 4096, and enough for one event of the largest accepted size", largest)
	}
	if c.MaxSubscribers < 1 || c.MaxSubscribers > maxCount {
		bad("MAX_SUBSCRIBERS", "must be between 1 and %d", maxCount)
	}
	if c.PublishQueueSize < 1 || c.PublishQueueSize > maxCount {
		bad("PUBLISH_QUEUE_SIZE", "must be between 1 and %d", maxCount)
	}
	if c.PublishQueueBytes < largest || c.PublishQueueBytes > maxQueueBytes {
		bad("PUBLISH_QUEUE_BYTES", "must be between %d (one event of the largest accepted size) and %d", largest, int64(maxQueueBytes))
	}
	if !plainField(c.ClientIPField) {
		bad("CLIENT_IP_FIELD", "must be a plain field name")
	}
	var originErr error
	c.AllowOrigins, _, originErr = parseOrigins(c.CORSAllowedOrigins)
	if originErr != nil {
		bad("CORS_ALLOWED_ORIGINS", "%w", originErr)
	}
	c.TrustedNets = nil
	for _, s := range c.TrustedProxyCIDRs {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			bad("TRUSTED_PROXY_CIDRS", "%q is not a CIDR (e.g. 10.0.0.0/8)", s)
			continue
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 means 10.0.0.0/8: addresses are compared unmapped
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		c.TrustedNets = append(c.TrustedNets, p.Masked())
	}
	errs = append(errs, c.validateAccess()...)
	for name, n := range map[string]int{"MAX_CONNECTIONS": c.MaxConnections, "MAX_CONNECTIONS_PER_IP": c.MaxConnectionsPerIP} {
		if n < 0 || n > maxConns {
			bad(name, "must be between 0 (derived from the descriptor limit) and %d", maxConns)
		}
	}
	errs = append(errs, c.validateTLS()...)
	errs = append(errs, c.validateUpstreams()...)
	errs = append(errs, c.validateKinesis()...)
	if _, err := brokerurl.Validate(c.BrokerURL, c.BrokerChannel); err != nil {
		errs = append(errs, err) // names BROKER_URL or BROKER_CHANNEL, never the password
	}
	return errors.Join(errs...)
}

// plainField reports whether name can be a JSON member name as written,
// without escapes: valid UTF-8, no control character, quote or backslash.
func plainField(name string) bool {
	return utf8.ValidString(name) && !strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' || r == 0x7f })
}

// Bounds of the access settings.
const (
	minTokenLen  = 16
	minJWTSecret = 32 // bytes: HS256 needs a key as long as its hash (RFC 7518, 3.2)
	maxRate      = 1_000_000
	maxConns     = 100_000_000
)

// validateAccess checks the access settings and keeps only the non-empty
// listener and publisher tokens (see validTokens).
func (c *Config) validateAccess() []error {
	var errs []error
	var tokenErrs []error
	c.ListenTokens, tokenErrs = validTokens("LISTEN_TOKENS", c.ListenTokens, "leave the streams open")
	errs = append(errs, tokenErrs...)
	switch n := len(c.ListenJWTSecret); {
	case n > 0 && n < minJWTSecret:
		errs = append(errs, fmt.Errorf("LISTEN_JWT_SECRET: must be at least %d bytes, got %d", minJWTSecret, n))
	case n > 0 && distinct(c.ListenJWTSecret) < minDistinct:
		// Blank or one character repeated: anyone could sign listener tokens.
		errs = append(errs, errors.New("LISTEN_JWT_SECRET: repeats too few characters to be a secret; generate one, e.g. openssl rand -base64 32"))
	}
	if !(c.PublishRatePerIP >= 0 && c.PublishRatePerIP <= maxRate) {
		errs = append(errs, fmt.Errorf("PUBLISH_RATE_PER_IP: must be between 0 (unlimited) and %d", maxRate))
	}
	if c.MaxListenersPerIP < 0 || c.MaxListenersPerIP > maxCount {
		errs = append(errs, fmt.Errorf("MAX_LISTENERS_PER_IP: must be between 0 (the default share) and %d", maxCount))
	}
	c.PublishTokens, tokenErrs = validTokens("PUBLISH_TOKENS", c.PublishTokens, "leave the server-side ways in (POST /events, gRPC) open")
	errs = append(errs, tokenErrs...)
	return errs
}

// validTokens checks the secrets of a token list variable (LISTEN_TOKENS,
// PUBLISH_TOKENS) and returns the non-empty ones. A token must survive a
// header and a query string as it is (RFC 6750's b64token characters) and
// be long enough not to be guessed. A list that is set but blank is an
// error: most likely a secret that did not reach the environment, and
// starting would open what it was meant to close.
func validTokens(name string, list []string, opens string) ([]string, []error) {
	var errs []error
	var tokens []string
	for _, t := range list {
		switch t = strings.TrimSpace(t); {
		case t == "":
		case len(t) < minTokenLen || strings.TrimLeft(strings.TrimRight(t, "="), tokenChars) != "":
			// The message never shows the token: it is a secret.
			errs = append(errs, fmt.Errorf("%s: token %d must be at least %d characters of A-Z a-z 0-9 - . _ ~ + / (then = only)", name, len(tokens)+1, minTokenLen))
			tokens = append(tokens, t)
		default:
			tokens = append(tokens, t)
		}
	}
	if len(list) > 0 && len(tokens) == 0 {
		errs = append(errs, fmt.Errorf("%s: is set but lists no token; list at least one, or unset it to %s", name, opens))
	}
	for i, t := range tokens {
		if len(t) >= minTokenLen && distinct(t) < minDistinct {
			errs = append(errs, fmt.Errorf("%s: token %d repeats too few characters to be a secret; generate one, e.g. openssl rand -base64 32", name, i+1))
		}
	}
	return tokens, errs
}

// minDistinct is the fewest different characters a secret may have. It
// refuses blanks and repetitions (aaaa…, abab…) and practically never a
// generated secret: 16 random hex digits have fewer with a chance below
// one in a million.
const minDistinct = 5

func distinct(s string) int {
	seen := map[byte]bool{}
	for i := range len(s) {
		seen[s[i]] = true
	}
	return len(seen)
}

const tokenChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"

func usage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(out, "Usage:\n  event_dispatcher [-port PORT] [-admin-port PORT|off]  serve\n  event_dispatcher -healthcheck [-port PORT]            probe a running instance\n  event_dispatcher -version\n\nFlags:\n")
	fs.SetOutput(out)
	fs.PrintDefaults()
	fmt.Fprintf(out, "\nEnvironment variables:\n")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  VARIABLE\tDEFAULT\tMEANING")
	_ = envconfig.Usagef("", &Config{}, tw, "{{range .}}{{if usage_key .}}  {{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}{{end}}")
	_ = tw.Flush()
}

// MarshalZerologObject logs every variable under its environment name with
// its effective value: durations the way they are configured ("5s"), lists
// comma-separated, and origins, CIDRs and the log level as Load normalised
// them. A secret is logged only as set or not.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		name := v.Type().Field(i).Tag.Get("envconfig")
		switch f := v.Field(i).Interface(); {
		case name == "":
		case name == "UPSTREAM_URLS":
			e.Str(name, redactURLs(c.UpstreamURLs))
		case name == "UPSTREAM_HEADERS":
			e.Str(name, headerNames(c.UpstreamHeader))
		case name == "BROKER_URL":
			e.Str(name, brokerurl.Redact(c.BrokerURL)) // a secret, but its host helps: only the credentials are hidden
		case v.Type().Field(i).Tag.Get("secret") == "true":
			e.Str(name, map[bool]string{true: "[redacted]", false: ""}[v.Field(i).Len() > 0])
		case name == "CORS_ALLOWED_ORIGINS" && c.AllowOrigins == nil:
			e.Str(name, "*")
		case name == "CORS_ALLOWED_ORIGINS":
			e.Str(name, strings.Join(c.AllowOrigins, ","))
		case name == "TRUSTED_PROXY_CIDRS":
			e.Str(name, joinStrings(c.TrustedNets))
		case name == "LOG_LEVEL":
			e.Str(name, c.Level.String())
		default:
			if list, ok := f.([]string); ok {
				e.Str(name, strings.Join(list, ","))
			} else {
				e.Str(name, fmt.Sprint(f))
			}
		}
	}
}

func joinStrings[T fmt.Stringer](list []T) string {
	s := make([]string, len(list))
	for i, x := range list {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

// portOrOff normalises the port variable *v (":8080" → "8080", "OFF" →
// "off") and reports whether it is a fixed port, one that must not clash
// with another listener's; a value that is neither a port nor off is
// reported through bad.
func portOrOff(v *string, name string, bad func(name, format string, a ...any)) bool {
	*v = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(*v), ":"))
	if *v == AdminOff {
		return false
	}
	p, err := strconv.ParseUint(*v, 10, 16)
	if err != nil || *v != strconv.FormatUint(p, 10) {
		bad(name, "%q is not a port number (0-65535) or off", *v)
		return false
	}
	return p != 0
}

// validateOps checks the operability settings: the admin port and the drain
// delay.
func (c *Config) validateOps(bad func(name, format string, a ...any), adminName string) {
	if portOrOff(&c.AdminPort, adminName, bad) && c.AdminPort == c.Port {
		if c.AdminPort == defaultAdminPort && adminName == "ADMIN_PORT" {
			// Releases before the admin port ran on PORT=9569: such a
			// deployment keeps starting, without the admin listener (a
			// warning, see Risks).
			c.AdminPort = AdminOff
		} else {
			bad(adminName, "%s is also PORT: the admin listener needs its own port, or off", c.AdminPort)
		}
	}
	if portOrOff(&c.GRPCPort, "GRPC_PORT", bad) && (c.GRPCPort == c.Port || c.GRPCPort == c.AdminPort) {
		bad("GRPC_PORT", "%s is taken by the HTTP or the admin listener: gRPC needs its own port, or off", c.GRPCPort)
	}
	c.AdminHost = strings.Trim(strings.TrimSpace(c.AdminHost), "[]")
	if a, err := netip.ParseAddr(c.AdminHost); c.AdminHost != "" && c.AdminHost != "localhost" && (err != nil || !a.IsValid()) {
		bad("ADMIN_HOST", "%q is not an IP address (e.g. 127.0.0.1, ::1), localhost or empty (every interface)", c.AdminHost)
	}
	if c.DrainDelay < 0 {
		bad("DRAIN_DELAY", "must not be negative")
	}
}

// Risk is a combination of settings that starts but may not do what its
// operator expects; the service logs it as a warning. A configuration a
// released version accepted must keep starting, so such combinations are
// never refused.
type Risk struct {
	Name string // the variable to look at
	Why  string
}

// Risks returns the risky combinations in c.
func (c Config) Risks() []Risk {
	var risks []Risk
	// At shutdown every stream gets its queued events and an end comment;
	// the writes are cut at SHUTDOWN_TIMEOUT. A client that reads slowly but
	// within WRITE_TIMEOUT may then lose the end of its stream.
	if c.ShutdownTimeout <= c.WriteTimeout {
		risks = append(risks, Risk{"SHUTDOWN_TIMEOUT", fmt.Sprintf("%s does not exceed WRITE_TIMEOUT %s: at shutdown a listener still taking its last events is cut at SHUTDOWN_TIMEOUT, possibly before it has them all", c.ShutdownTimeout, c.WriteTimeout)})
	}
	if c.Port == defaultAdminPort && c.AdminPort == AdminOff {
		risks = append(risks, Risk{"ADMIN_PORT", "PORT is " + defaultAdminPort + ", the admin port's default: the admin listener is off; set ADMIN_PORT to a port of its own to have it"})
	}
	_, warnings, _ := parseOrigins(c.CORSAllowedOrigins)
	for _, w := range warnings {
		risks = append(risks, Risk{"CORS_ALLOWED_ORIGINS", w})
	}
	return risks
}

// validateTLS requires both TLS files or neither, and loads the pair once,
// so that a missing file, a key that does not match its certificate or a
// PEM that does not parse stops the start, naming the variable at fault.
func (c *Config) validateTLS() []error {
	c.TLSCertFile, c.TLSKeyFile = strings.TrimSpace(c.TLSCertFile), strings.TrimSpace(c.TLSKeyFile)
	switch {
	case c.TLSCertFile == "" && c.TLSKeyFile == "":
		return nil
	case c.TLSKeyFile == "":
		return []error{errors.New("TLS_KEY_FILE: must be set with TLS_CERT_FILE (both or neither)")}
	case c.TLSCertFile == "":
		return []error{errors.New("TLS_CERT_FILE: must be set with TLS_KEY_FILE (both or neither)")}
	}
	err := tlscert.Check(c.TLSCertFile, c.TLSKeyFile)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tlscert.ErrCertFile):
		return []error{fmt.Errorf("TLS_CERT_FILE: %w", err)}
	case errors.Is(err, tlscert.ErrKeyFile):
		return []error{fmt.Errorf("TLS_KEY_FILE: %w", err)}
	default:
		return []error{fmt.Errorf("TLS_CERT_FILE, TLS_KEY_FILE: %w", err)}
	}
}

// TLS reports whether the public port serves HTTPS.
func (c Config) TLS() bool { return c.TLSCertFile != "" }
