package broker

import "event-dispatcher/pkg/brokerurl"

// Kind names the broker a URL points to; see package brokerurl, which
// reads BROKER_URL for configuration too.
type Kind = brokerurl.Kind

// Brokers understood by [Validate] and [New].
const (
	Redis = brokerurl.Redis
	NATS  = brokerurl.NATS
)

// Validate is [brokerurl.Validate].
func Validate(rawURL, channel string) (Kind, error) { return brokerurl.Validate(rawURL, channel) }

// Redact is [brokerurl.Redact].
func Redact(rawURL string) string { return brokerurl.Redact(rawURL) }
