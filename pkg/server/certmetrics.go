package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Certificate is what the metrics read of the public port's TLS
// certificate (package tlscert).
type Certificate interface {
	NotAfter() time.Time    // expiry of the certificate being served
	ReloadFailures() uint64 // renewals on disk that did not load
}

// certificateMetrics lets operators alert before the served certificate
// expires, and when a renewal on disk was refused (the previous certificate
// is still served, and will expire).
func certificateMetrics(c Certificate) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "event_dispatcher_tls_certificate_expiry_timestamp_seconds",
			Help: "When the TLS certificate served on the public port expires (Unix time); renewed files are served within 5 s of the next connection.",
		}, func() float64 { return float64(c.NotAfter().Unix()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "event_dispatcher_tls_certificate_reload_failures_total",
			Help: "Renewed TLS_CERT_FILE/TLS_KEY_FILE contents that did not load (the previous certificate is still served).",
		}, func() float64 { return float64(c.ReloadFailures()) }),
	}
}
