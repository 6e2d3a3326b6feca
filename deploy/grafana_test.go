package deploy

import (
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"event-dispatcher/internal/ssetest"
)

// grafanaDashboard is the dashboard operators import.
const grafanaDashboard = "grafana/event-dispatcher.json"

// dashboardQueries returns every PromQL expression of the dashboard, panels
// and template variables, by where it is.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", grafanaDashboard))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	out := map[string]string{}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			out["panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	labelValues := regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, s)
			continue
		}
		out["variable "+v.Name] = m[1]
	}
	if len(out) == 0 {
		t.Fatalf("%s: no queries found; the file layout changed and this test no longer sees them", grafanaDashboard)
	}
	return out
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promVariables = regexp.MustCompile(`\$\{?\w+\}?`)
	promIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords  = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
)

// metricNames returns the metric names a PromQL expression reads: what
// remains once strings, label matchers, ranges, groupings, variables,
// numbers, function calls and keywords are set aside.
func metricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, `""`)
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	s = promVariables.ReplaceAllString(s, " ")
	var names []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(s, -1) {
		ident := strings.TrimRight(strings.TrimSuffix(s[m[0]:m[1]], "("), " ")
		if m[2] >= 0 || slices.Contains(promKeywords, strings.ToLower(ident)) { // a function call
			continue
		}
		if m[0] > 0 && (s[m[0]-1] >= '0' && s[m[0]-1] <= '9' || s[m[0]-1] == '.') { // 1e3, 0.5
			continue
		}
		names = append(names, ident)
	}
	return names
}

func TestMetricNamesReadsPromQL(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (reason) (rate(a_total{instance=~"$instance", x="}"}[$__rate_interval]))`: {"a_total"},
		`histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m])))`:                      {"b_bucket"},
		`1 - clamp_max(max(c) + max(d{e="f"}), 1)`:                                        {"c", "d"},
		`sum(rate(x[1m])) by (le) / on (instance) group_left y`:                           {"x", "y"},
		`rate (z [1m]) > 1e3 and w`:                                                       {"z", "w"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%q) = %q, want %q", expr, got, want)
		}
	}
}

// Every query of the dashboard names metrics the service really exports,
// read from the /metrics of a running server, and the dashboard covers what
// operators look at first.
func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	srv := newServer(t)
	admin := httptest.NewServer(srv.Admin())
	t.Cleanup(admin.Close)
	exported := ssetest.Scrape(t, admin.URL+"/metrics").Names

	used := map[string]bool{}
	for where, expr := range dashboardQueries(t) {
		names := metricNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] {
				t.Errorf("%s: %q reads %s, which the service does not export", where, expr, n)
			}
		}
	}
	for _, n := range []string{
		"event_dispatcher_listeners", "event_dispatcher_events_accepted_total", "event_dispatcher_deliveries_total",
		"event_dispatcher_events_rejected_total", "event_dispatcher_listeners_dropped_total",
		"event_dispatcher_publish_queue_depth", "event_dispatcher_broker_connected", "process_resident_memory_bytes",
		"event_dispatcher_connections", "event_dispatcher_connections_refused_total", "event_dispatcher_connections_idle_closed_total",
		"event_dispatcher_connections_busy_closed_total",
	} {
		if !used[n] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}

// The README's metrics list names every metric of the service's own.
func TestReadmeListsEveryMetric(t *testing.T) {
	srv := newServer(t)
	admin := httptest.NewServer(srv.Admin())
	t.Cleanup(admin.Close)
	readme := readFile(t, "README.md")
	listed := 0
	for n := range ssetest.Scrape(t, admin.URL+"/metrics").Names {
		if !strings.HasPrefix(n, "event_dispatcher_") || strings.HasSuffix(n, "_bucket") || strings.HasSuffix(n, "_count") || strings.HasSuffix(n, "_sum") {
			continue
		}
		listed++
		if !strings.Contains(readme, "`"+n+"`") && !strings.Contains(readme, "`"+n+"{") {
			t.Errorf("README.md does not list %s", n)
		}
	}
	if listed == 0 {
		t.Error("the service exports no event_dispatcher_ metric")
	}
}
