package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kelseyhightower/envconfig"
	"golang.org/x/net/idna"
)

// explain turns envconfig's parse error into one that says what the
// variable expects, with an example, instead of Go type names.
func explain(pe *envconfig.ParseError) error {
	f, _ := reflect.TypeFor[Config]().FieldByName(pe.FieldName)
	switch {
	case f.Type == reflect.TypeFor[time.Duration]():
		return fmt.Errorf("%s: %q is not a duration; use a number with a unit, such as 5s or 500ms", pe.KeyName, pe.Value)
	case f.Type.Kind() >= reflect.Int && f.Type.Kind() <= reflect.Uint64:
		example := f.Tag.Get("default")
		if example == "" || example == "0" {
			example = "100"
		}
		what := "a whole number"
		if strings.HasSuffix(pe.KeyName, "_BYTES") {
			what = "a whole number of bytes"
		}
		return fmt.Errorf("%s: %q is not %s; use digits only, such as %s", pe.KeyName, pe.Value, what, example)
	default:
		return fmt.Errorf("%s: %q is not a valid %s", pe.KeyName, pe.Value, pe.TypeName)
	}
}

// parseOrigin checks that s is an origin as browsers send it in the Origin
// header, scheme://host[:port], and returns it in that form: lower case,
// without a default port or a trailing slash.
func parseOrigin(s string) (string, error) {
	const want = "is not an origin; use scheme://host[:port], such as https://player.example"
	u, err := url.Parse(strings.TrimSuffix(s, "/"))
	switch {
	case err != nil, u.Scheme == "", u.Host == "", u.Opaque != "":
		return "", fmt.Errorf("%q %s", s, want)
	case u.User != nil, u.Path != "", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return "", fmt.Errorf("%q %s, with no path, query or user", s, want)
	}
	scheme, host, port := strings.ToLower(u.Scheme), strings.ToLower(u.Hostname()), u.Port()
	if host == "" || strings.HasSuffix(u.Host, ":") {
		return "", fmt.Errorf("%q %s", s, want)
	}
	if strings.Contains(host, "*") {
		return "", fmt.Errorf("%q %s: wildcards are not supported; list each origin, or use * alone", s, want)
	}
	// Browsers send an internationalised host in its ASCII form
	// (https://xn--bcher-kva.example): listed as typed, it would never match.
	if strings.ContainsFunc(host, func(r rune) bool { return r >= utf8.RuneSelf }) {
		ascii, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return "", fmt.Errorf("%q %s: %v", s, want, err)
		}
		host = ascii
	}
	if port != "" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return "", fmt.Errorf("%q %s: %q is not a port", s, want, port)
		}
	}
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = "" // browsers leave the default port out of Origin
	}
	if port != "" || strings.Contains(host, ":") {
		host = net.JoinHostPort(host, port)
		if port == "" {
			host = strings.TrimSuffix(host, ":")
		}
	}
	return scheme + "://" + host, nil
}

// parseOrigins reads CORS_ALLOWED_ORIGINS: nil for "*" (any origin), else
// the listed origins, normalised. Releases before refused nothing here, so
// what could be a mistake is a warning, leaving the deployment as open or
// closed as it was then: an entry no browser could send (it matched no
// request) is left out, and "*" in a list still means any origin. Only a
// list naming nothing at all is refused: it must not mean any origin.
func parseOrigins(list []string) (origins []string, warnings []string, err error) {
	var errs []error
	star := false
	for _, o := range list {
		switch o = strings.TrimSpace(o); o {
		case "":
		case "*":
			star = true
		default:
			n, err := parseOrigin(o)
			if err != nil {
				errs = append(errs, err)
			} else if !slices.Contains(origins, n) {
				origins = append(origins, n)
			}
		}
	}
	for _, e := range errs {
		warnings = append(warnings, e.Error()+"; left out")
	}
	switch {
	case star && (len(origins) > 0 || len(errs) > 0):
		return nil, []string{"* in a list allows any origin, as * alone does; list the origins without it to allow only them"}, nil
	case star:
		return nil, nil, nil
	case len(origins) == 0 && len(errs) == 0:
		// Fail closed: an empty list must not silently mean "any origin".
		return []string{}, nil, fmt.Errorf("is empty; list origins, or use * to allow any")
	case len(origins) == 0:
		warnings = append(warnings, "no origin listed is one a browser sends: cross-origin requests are all refused")
		return []string{}, warnings, nil
	}
	return origins, warnings, nil
}

// NearMiss is an environment variable the service does not read but whose
// name looks like one it does: most likely a typo that leaves a setting at
// its default.
type NearMiss struct {
	Name string // as found in the environment
	Like string // the variable it resembles
}

// NearMisses returns the variables of environ ("NAME=value" each) that are
// not the service's but look like them: within a small edit distance of
// one of its names (case aside), or sharing a name's leading words
// (HEARTBEAT_…). The names are read from Config's tags, so every setting
// is covered.
func NearMisses(environ []string) []NearMiss {
	known := Names()
	var out []NearMiss
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if name == "" || slices.Contains(known, name) || slices.Contains(othersNames, name) {
			continue
		}
		if like, ok := resembles(name, known); ok {
			out = append(out, NearMiss{Name: name, Like: like})
		}
	}
	return out
}

// othersNames are variables of other software that look like the
// service's but are not typos: Go's crypto/x509 and OpenSSL read
// SSL_CERT_FILE and SSL_CERT_DIR for the trusted roots (two edits from
// TLS_CERT_FILE), and many environments set them.
var othersNames = []string{"SSL_CERT_FILE", "SSL_CERT_DIR"}

// OpenByMistake returns an error when a near miss resembles a listener
// secret (LISTEN_TOKENS, LISTEN_JWT_SECRET) while none is set: whoever set
// it meant to close the streams, and a warning would leave them open. The
// error names the variables, never the value.
func OpenByMistake(c Config, misses []NearMiss) error {
	if len(c.ListenTokens) > 0 || c.ListenJWTSecret != "" {
		return nil
	}
	for _, m := range misses {
		// Not every secret: a misspelt BROKER_URL leaves the streams closed or open as they were.
		if m.Like == "LISTEN_TOKENS" || m.Like == "LISTEN_JWT_SECRET" {
			return fmt.Errorf("%s: not a variable of the service (did you mean %s?); without a listener secret the streams would be open, so the service does not start", m.Name, m.Like)
		}
	}
	return nil
}

// Names lists every environment variable the service reads.
func Names() []string {
	var names []string
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("envconfig"); name != "" && t.Field(i).Tag.Get("ignored") != "true" {
			names = append(names, name)
		}
	}
	return names
}

// resembles returns the known name that name is most likely a typo of.
func resembles(name string, known []string) (string, bool) {
	upper := strings.ToUpper(name)
	best, bestDist := "", -1
	for _, k := range known {
		// One edit in a short name (HOST is not PORT), two in a longer one.
		limit := 1
		if len(k) > 6 {
			limit = 2
		}
		if d := editDistance(upper, k); d <= limit && (bestDist < 0 || d < bestDist) {
			best, bestDist = k, d
		}
	}
	if bestDist >= 0 {
		return best, true
	}
	for _, k := range known {
		// The same leading words (HEARTBEAT_PERIOD, CORS_ORIGINS), at least
		// four letters of them: MAX_ and LOG_ are everybody's. GRPC_ is
		// gRPC's own (GRPC_GO_LOG_SEVERITY_LEVEL, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH):
		// only a near spelling of GRPC_PORT is ours.
		if p, ok := leadingWords(k); ok && p != "GRPC_" && strings.HasPrefix(upper, p) {
			return k, true
		}
	}
	return "", false
}

// leadingWords returns the leading words of a known name that mark a
// variable as meant for this service: at least four letters up to an
// underscore, and one word more after a word other software uses too
// (CLIENT_ID and CLIENT_SECRET are OAuth's, CLIENT_IP is ours).
func leadingWords(k string) (string, bool) {
	i := strings.IndexByte(k[min(4, len(k)):], '_')
	if i < 0 {
		return "", false
	}
	p := k[:4+i+1]
	if p == "CLIENT_" {
		j := strings.IndexByte(k[len(p):], '_')
		if j < 0 {
			return "", false
		}
		p = k[:len(p)+j+1]
	}
	return p, true
}

// editDistance is the Damerau-Levenshtein distance (optimal string
// alignment) between a and b: insertions, deletions, substitutions and
// swaps of two neighbours each count one.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
