package ssetest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a Prometheus endpoint.
type Metrics struct {
	// Samples holds every sample by its series, written
	// name{label="value",...} with labels sorted; histograms and summaries
	// as their _count and _sum series.
	Samples map[string]float64
	// Names holds every name a query may use: each family's, and for
	// histograms their _bucket, _count and _sum series.
	Names map[string]bool
}

// Scrape GETs url (a /metrics endpoint) and parses the text format.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	m, err := ScrapeErr(url)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ScrapeErr is Scrape returning its error.
func ScrapeErr(url string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Metrics{}, err
	}
	// A fresh connection each time: a kept-alive one would add goroutines
	// to the tests that count them.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Metrics{}, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return Metrics{}, fmt.Errorf("GET %s: %w", url, err)
	}
	out := Metrics{Samples: map[string]float64{}, Names: map[string]bool{}}
	for name, f := range families {
		out.Names[name] = true
		if t := f.GetType(); t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY {
			out.Names[name+"_count"], out.Names[name+"_sum"] = true, true
			if t == dto.MetricType_HISTOGRAM {
				out.Names[name+"_bucket"] = true
			}
		}
		for _, m := range f.GetMetric() {
			key := series(name, m.GetLabel())
			switch {
			case m.Counter != nil:
				out.Samples[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out.Samples[key] = m.Gauge.GetValue()
			case m.Untyped != nil:
				out.Samples[key] = m.Untyped.GetValue()
			case m.Histogram != nil:
				out.Samples[series(name+"_count", m.GetLabel())] = float64(m.Histogram.GetSampleCount())
				out.Samples[series(name+"_sum", m.GetLabel())] = m.Histogram.GetSampleSum()
			case m.Summary != nil:
				out.Samples[series(name+"_count", m.GetLabel())] = float64(m.Summary.GetSampleCount())
				out.Samples[series(name+"_sum", m.GetLabel())] = m.Summary.GetSampleSum()
			}
		}
	}
	return out, nil
}

func series(name string, labels []*dto.LabelPair) string {
	if len(labels) == 0 {
		return name
	}
	parts := make([]string, 0, len(labels))
	for _, l := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	slices.Sort(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}
