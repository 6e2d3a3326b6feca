package server

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"event-dispatcher/pkg/kinesis"
)

// kinesisCollector turns the Kinesis sink's counters into metrics when
// Prometheus scrapes. Without a sink it exports state 0 and zeros, as the
// broker's metrics do without a broker, so dashboards and alerts work
// unchanged whether forwarding is on or off.
type kinesisCollector struct {
	sink                                  KinesisSink
	state, put, failed, dropped, batches  *prometheus.Desc
	buffered, bufferLimit, latencySeconds *prometheus.Desc
}

func newKinesisCollector(sink KinesisSink) *kinesisCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("event_dispatcher_kinesis_"+name, help, labels, nil)
	}
	return &kinesisCollector{
		sink:           sink,
		state:          d("state", "Forwarding to Kinesis: 0 off (no KINESIS_STREAM_NAME), 1 ok, 2 retrying (records being resent), 3 down (calls failing entirely)."),
		put:            d("records_put_total", "Events Kinesis accepted."),
		failed:         d("records_failed_total", "Record attempts Kinesis failed, queued for resending, by error code (ProvisionedThroughputExceededException, InternalFailure, …; transport or timeout when the call itself failed).", "code"),
		dropped:        d("records_dropped_total", "Events not forwarded to Kinesis, by reason: buffer_full (KINESIS_BUFFER_BYTES), too_large (over 1 MiB), rejected (a request Kinesis refused as invalid), shutdown (still buffered at the shutdown deadline).", "reason"),
		batches:        d("batches_total", "PutRecords calls that returned."),
		buffered:       d("buffered_bytes", "Bytes of events waiting for Kinesis or in flight."),
		bufferLimit:    d("buffer_limit_bytes", "KINESIS_BUFFER_BYTES: beyond it new events are dropped from the Kinesis path."),
		latencySeconds: d("put_seconds", "Duration of each PutRecords call."),
	}
}

func (c *kinesisCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.put, c.failed, c.dropped, c.batches, c.buffered, c.bufferLimit, c.latencySeconds} {
		ch <- d
	}
}

func (c *kinesisCollector) Collect(ch chan<- prometheus.Metric) {
	st, state := kinesis.Stats{Latency: kinesis.Histogram{Counts: make([]uint64, len(kinesis.LatencyBuckets))}}, 0
	if c.sink != nil {
		st = c.sink.Stats()
		state = 1 + int(st.State)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.state, float64(state))
	counter(c.put, st.Put)
	counter(c.batches, st.Batches)
	// The two codes PutRecords gives per record are always exported, at 0
	// until they happen, so rates and alerts on them have a series.
	codes := []string{"ProvisionedThroughputExceededException", "InternalFailure"}
	for code := range st.FailedByCode {
		if !slices.Contains(codes, code) {
			codes = append(codes, code)
		}
	}
	slices.Sort(codes)
	for _, code := range codes {
		counter(c.failed, st.FailedByCode[code], code)
	}
	for i, reason := range kinesis.DropReasons {
		counter(c.dropped, st.Dropped[i], reason)
	}
	gauge(c.buffered, float64(st.BufferedBytes))
	gauge(c.bufferLimit, float64(st.BufferLimit))
	buckets := make(map[float64]uint64, len(kinesis.LatencyBuckets))
	for i, b := range kinesis.LatencyBuckets {
		buckets[b] = st.Latency.Counts[i]
	}
	ch <- prometheus.MustNewConstHistogram(c.latencySeconds, st.Latency.Count, st.Latency.Sum, buckets)
}
