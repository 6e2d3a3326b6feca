// Package brokerurl reads BROKER_URL and BROKER_CHANNEL: which broker they
// name, whether they are usable, and how to show the URL without its
// credentials. Configuration checks them without knowing the broker's
// types; package broker connects with them.
package brokerurl

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// Kind names the broker a URL points to.
type Kind string

// Brokers understood by [Validate].
const (
	Redis Kind = "redis" // redis:// or rediss://: Redis or Valkey pub/sub
	NATS  Kind = "nats"  // nats:// (or tls://), comma-separated servers: NATS core
)

// Validate checks a BROKER_URL and BROKER_CHANNEL without contacting the
// broker, and tells which broker the URL names. Its errors never contain
// the URL's password.
// An empty URL (no broker) is valid; the channel is still checked.
func Validate(rawURL, channel string) (Kind, error) {
	var kind Kind
	if rawURL != "" {
		var err error
		if kind, err = validateURL(rawURL); err != nil {
			return "", err
		}
	}
	if err := validateChannel(kind, channel); err != nil {
		return "", err
	}
	return kind, nil
}

func validateURL(rawURL string) (Kind, error) {
	scheme, _, _ := strings.Cut(rawURL, "://")
	switch strings.ToLower(scheme) {
	case "redis", "rediss":
		if _, err := url.Parse(rawURL); err != nil {
			// url.Parse's error quotes the URL, password included.
			return "", errors.New("BROKER_URL: is not a valid URL (a password with characters such as / # % @ : must be percent-encoded)")
		}
		if _, err := redis.ParseURL(rawURL); err != nil {
			return "", fmt.Errorf("BROKER_URL: %s is not a usable Redis URL: %s", Redact(rawURL), Scrub(err.Error(), rawURL))
		}
		return Redis, nil
	case "nats", "tls":
		for _, s := range strings.Split(rawURL, ",") {
			u, err := url.Parse(strings.TrimSpace(s))
			if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
				return "", fmt.Errorf("BROKER_URL: %s is not a list of nats://host:port URLs", Redact(rawURL))
			}
		}
		return NATS, nil
	}
	return "", errors.New("BROKER_URL: must be empty, redis://host:port[/db], rediss://… (TLS) or nats://host:port[,nats://…]; got " + Redact(rawURL))
}

// validateChannel refuses names that would split a deployment or match
// other subjects: NATS wildcards, empty tokens, blanks.
func validateChannel(kind Kind, channel string) error {
	if channel == "" || strings.ContainsFunc(channel, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return errors.New("BROKER_CHANNEL: must be a non-empty name without blanks")
	}
	if kind == NATS {
		for _, tok := range strings.Split(channel, ".") {
			if tok == "" || strings.ContainsAny(tok, "*>") {
				return errors.New("BROKER_CHANNEL: must be a NATS subject without wildcards or empty tokens (e.g. event-dispatcher.prod)")
			}
		}
	}
	return nil
}

// Redact hides every password in a (possibly comma-separated) broker URL,
// for logs and error messages, and a user without a password too: NATS
// takes nats://token@host as a token.
func Redact(rawURL string) string {
	if rawURL == "" {
		return ""
	}
	parts := strings.Split(rawURL, ",")
	for i, s := range parts {
		if u, err := url.Parse(strings.TrimSpace(s)); err == nil {
			if _, hasPassword := u.User.Password(); u.User != nil && !hasPassword {
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		} else {
			parts[i] = "(unparsable URL)"
		}
	}
	return strings.Join(parts, ",")
}

// Scrub removes the password of rawURL from a library's error message.
func Scrub(msg, rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}
