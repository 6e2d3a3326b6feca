package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"event-dispatcher/internal/ssetest"
	"event-dispatcher/pkg/access"
	"event-dispatcher/pkg/broadcast"
	"event-dispatcher/pkg/server"
)

const (
	ceStructured = "application/cloudevents+json"
	ceBatch      = "application/cloudevents-batch+json"
)

// pushCE sends one request to POST /events and returns the answer.
func pushCE(t *testing.T, srv *ssetest.Server, header http.Header, body string) ssetest.Response {
	t.Helper()
	r, err := srv.Do(within(t, time.Minute), http.MethodPost, "/events", header, []byte(body)) // a guard against a hang only
	if err != nil {
		t.Fatalf("POST /events: %v", err)
	}
	return r
}

func ct(v string) http.Header { return http.Header{"Content-Type": {v}} }

// binary returns the headers of a binary-mode event with the four
// required attributes, plus extra.
func binary(contentType string, extra ...string) http.Header {
	h := http.Header{
		"Ce-Specversion": {"1.0"}, "Ce-Id": {"b1"}, "Ce-Source": {"/shop"}, "Ce-Type": {"com.example.order.placed"},
	}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = []string{extra[i+1]}
	}
	return h
}

func TestCloudEventsReachListenersAsStructuredJSON(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	stream := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	ctx := within(t, 30*time.Second)

	cases := []struct {
		name   string
		header http.Header
		body   string
		want   []string // what the listener receives, byte for byte
	}{
		{"structured passes through as written, compacted", ct(ceStructured + "; charset=utf-8"),
			`{ "specversion":"1.0", "type":"t", "source":"/s", "id":"1", "n": 1.50, "data":{"b":1e2, "a":[1]} }`,
			[]string{`{"specversion":"1.0","type":"t","source":"/s","id":"1","n":1.50,"data":{"b":1e2,"a":[1]}}`}},
		{"binary JSON data", binary("application/json"), `{"z":1, "a":2.0}`,
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","datacontenttype":"application/json","data":{"z":1,"a":2.0}}`}},
		{"binary +json data", binary("application/vnd.x+json"), `[1,2]`,
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","datacontenttype":"application/vnd.x+json","data":[1,2]}`}},
		{"binary without content type is JSON", binary(""), `"hi"`,
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","data":"hi"}`}},
		{"binary text data is a string", binary("text/plain; charset=utf-8"), "line \"1\"\nline 2",
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","datacontenttype":"text/plain; charset=utf-8","data":"line \"1\"\nline 2"}`}},
		{"binary other data is base64", binary("application/octet-stream"), "\x00\xff\x10",
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","datacontenttype":"application/octet-stream","data_base64":"AP8Q"}`}},
		{"binary without data", binary(""), ``,
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed"}`}},
		{"binary headers are percent-decoded, extensions sorted", binary("", "Ce-Subject", "caf%C3%A9%20%22x%22", "Ce-Zeta", "z", "Ce-Alpha", "100%25", "Ce-Time", "2026-01-02T15:04:05.123Z"), ``,
			[]string{`{"specversion":"1.0","id":"b1","source":"/shop","type":"com.example.order.placed","alpha":"100%","subject":"café \"x\"","time":"2026-01-02T15:04:05.123Z","zeta":"z"}`}},
		{"batch: each event in order", ct(ceBatch),
			`[ {"specversion":"1.0","id":"1","source":"/s","type":"t"} , {"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"AQ=="} ]`,
			[]string{`{"specversion":"1.0","id":"1","source":"/s","type":"t"}`, `{"specversion":"1.0","id":"2","source":"/s","type":"t","data_base64":"AQ=="}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := pushCE(t, srv, c.header, c.body)
			want := `{"message":"Event pushed successfully"}` + "\n"
			if strings.Contains(c.header.Get("Content-Type"), "batch") {
				want = fmt.Sprintf(`{"message":"Event pushed successfully","count":%d}`+"\n", len(c.want))
			}
			if r.Status != http.StatusOK || string(r.Body) != want {
				t.Fatalf("answer %d %s, want 200 %s", r.Status, r.Body, want)
			}
			for _, w := range c.want {
				if got := stream.NextData(t, ctx); got != w {
					t.Errorf("listener got\n%s\nwant\n%s", got, w)
				}
			}
		})
	}
}

func TestCloudEventsFiltersMatchAttributes(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	stream := ssetest.Subscribe(t, srv.Client, srv.URL+"/events?type=com.example.order.placed&source=/shop", nil)
	for _, typ := range []string{"com.example.other", "com.example.order.placed"} {
		h := binary("")
		h.Set("Ce-Type", typ)
		if r := pushCE(t, srv, h, ""); r.Status != http.StatusOK {
			t.Fatalf("push: %d %s", r.Status, r.Body)
		}
	}
	got := stream.NextData(t, within(t, 30*time.Second))
	if !strings.Contains(got, `"type":"com.example.order.placed"`) {
		t.Fatalf("filtered listener got %s", got)
	}
}

func TestCloudEventsRefusals(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{MaxBodyBytes: 512})
	valid := `"specversion":"1.0","id":"1","source":"/s","type":"t"`
	cases := []struct {
		name   string
		header http.Header
		body   string
		status int
		want   string // the error names this
	}{
		{"specversion missing", ct(ceStructured), `{"id":"1","source":"/s","type":"t"}`, 400, "specversion: missing"},
		{"specversion other", ct(ceStructured), `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, 400, `specversion: must be "1.0"`},
		{"id empty", ct(ceStructured), `{"specversion":"1.0","id":"","source":"/s","type":"t"}`, 400, "id: must not be empty"},
		{"id a number", ct(ceStructured), `{"specversion":"1.0","id":1,"source":"/s","type":"t"}`, 400, "id: must be a string"},
		{"source missing", ct(ceStructured), `{"specversion":"1.0","id":"1","type":"t"}`, 400, "source: missing"},
		{"type missing", ct(ceStructured), `{"specversion":"1.0","id":"1","source":"/s"}`, 400, "type: missing"},
		{"time not RFC 3339", ct(ceStructured), `{` + valid + `,"time":"2026-01-02 15:04"}`, 400, "time: must be an RFC 3339"},
		{"dataschema relative", ct(ceStructured), `{` + valid + `,"dataschema":"/schema"}`, 400, "dataschema: must be an absolute URI"},
		{"attribute name upper case", ct(ceStructured), `{` + valid + `,"Foo":"x"}`, 400, `attribute "Foo": attribute names are`},
		{"attribute name with dash", ct(ceStructured), `{` + valid + `,"a-b":"x"}`, 400, `attribute "a-b"`},
		{"extension an object", ct(ceStructured), `{` + valid + `,"ext":{}}`, 400, "ext: must be a string, a number or a boolean"},
		{"attribute twice", ct(ceStructured), `{` + valid + `,"id":"2"}`, 400, `attribute "id": given twice`},
		{"data and data_base64", ct(ceStructured), `{` + valid + `,"data":1,"data_base64":"AQ=="}`, 400, "data_base64: data and data_base64 are exclusive"},
		{"data_base64 not base64", ct(ceStructured), `{` + valid + `,"data_base64":"A!=="}`, 400, "data_base64: must be base64"},
		{"not an object", ct(ceStructured), `[1]`, 400, "body must be one JSON object"},
		{"beyond I-JSON", ct(ceStructured), `{` + valid + `,"data":1e400}`, 400, "I-JSON"},
		{"avro format", ct("application/cloudevents+avro"), `x`, 415, "only the JSON event format"},
		{"avro batch", ct("application/cloudevents-batch+avro"), `x`, 415, "only the JSON event format"},
		{"binary without attributes", ct("application/json"), `{}`, 400, "specversion: missing"},
		{"binary bad percent-encoding", binary("", "Ce-Subject", "a%zz"), ``, 400, `attribute "subject": invalid percent-encoding`},
		{"binary truncated percent-encoding", binary("", "Ce-Subject", "a%4"), ``, 400, `attribute "subject": invalid percent-encoding`},
		{"binary decodes to invalid UTF-8", binary("", "Ce-Subject", "%ff"), ``, 400, `attribute "subject": is not valid UTF-8`},
		{"binary control character", binary("", "Ce-Subject", "a%00b"), ``, 400, `subject: must not contain control characters`},
		{"binary C1 control character", binary("", "Ce-Myext", "%C2%85"), ``, 400, `myext: must not contain control characters`},
		{"control character escaped", ct(ceStructured), `{` + valid + `,"subject":"a\nb"}`, 400, `subject: must not contain control characters`},
		{"id with a NUL", ct(ceStructured), `{"specversion":"1.0","id":"1\u0000","source":"/s","type":"t"}`, 400, `id: must not contain control characters`},
		{"binary datacontenttype header", binary("", "Ce-Datacontenttype", "text/plain"), ``, 400, "datacontenttype: in binary mode it is the Content-Type header"},
		{"binary attribute with underscore", binary("", "Ce-Data_base64", "AQ=="), ``, 400, `attribute "data_base64": attribute names are`},
		{"binary JSON data not JSON", binary("application/json"), `{`, 400, "data: is not valid JSON"},
		{"binary text not UTF-8", binary("text/plain"), "\xff", 400, "data: is not valid UTF-8"},
		{"binary time", binary("", "Ce-Time", "yesterday"), ``, 400, "time: must be an RFC 3339"},
		{"binary too large once encoded", binary("application/octet-stream"), strings.Repeat("x", 400), 413, "once encoded"},
		{"body too large", ct(ceStructured), `{` + valid + `,"data":"` + strings.Repeat("x", 600) + `"}`, 413, "body exceeds 512 bytes"},
		{"batch not an array", ct(ceBatch), `{` + valid + `}`, 400, "batch: must be a JSON array"},
		{"batch trailing data", ct(ceBatch), `[{` + valid + `}] x`, 400, "batch: must be a JSON array"},
		{"batch unterminated", ct(ceBatch), `[{` + valid + `}`, 400, "batch: must be a JSON array"},
		{"batch with an invalid event", ct(ceBatch), `[{` + valid + `},{` + valid + `,"time":"x"}]`, 400, "event 2: time: must be an RFC 3339"},
		{"batch with a non-object", ct(ceBatch), `[{` + valid + `},3]`, 400, "event 2: body must be one JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := pushCE(t, srv, c.header, c.body)
			var e struct{ Error string }
			if err := json.Unmarshal(r.Body, &e); err != nil || r.Status != c.status || !strings.Contains(e.Error, c.want) {
				t.Fatalf("answer %d %s, want %d with an error containing %q", r.Status, r.Body, c.status, c.want)
			}
		})
	}
	if got := srv.Hub.Stats().EventsAccepted; got != 0 {
		t.Fatalf("%d refused events reached the hub, the first of a refused batch among them?", got)
	}
}

func TestCloudEventsEmptyBatchIsAccepted(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	r := pushCE(t, srv, ct(ceBatch), ` [ ] `)
	if r.Status != 200 || string(r.Body) != `{"message":"Event pushed successfully","count":0}`+"\n" {
		t.Fatalf("empty batch: %d %s", r.Status, r.Body)
	}
}

func TestCloudEventsBatchRefusedByTheHubSaysHowManyWerePublished(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	if err := srv.Hub.Close(within(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	r := pushCE(t, srv, ct(ceBatch), `[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`)
	var e struct {
		Error     string
		Published *int
	}
	if err := json.Unmarshal(r.Body, &e); err != nil || r.Status != 503 || e.Published == nil || *e.Published != 0 ||
		!strings.Contains(e.Error, "0 of 1 events published") || r.Header.Get("Retry-After") == "" {
		t.Fatalf("answer %d %s %v", r.Status, r.Body, r.Header)
	}
}

func TestCloudEventsPreflightAllowsCeHeaders(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{})
	r, err := srv.Do(within(t, 10*time.Second), http.MethodOptions, "/events", http.Header{
		"Origin": {"https://app.example"}, "Access-Control-Request-Method": {"POST"},
		"Access-Control-Request-Headers": {"ce-specversion,ce-id, ce-source,ce-type,content-type,x-other"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	allowed := r.Header.Get("Access-Control-Allow-Headers")
	for _, h := range []string{"ce-specversion", "ce-id", "ce-source", "ce-type", "Content-Type"} {
		if !strings.Contains(allowed, h) {
			t.Errorf("preflight allows %q, not %s", allowed, h)
		}
	}
	if strings.Contains(allowed, "x-other") || !strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %v", r.Header)
	}
}

func TestPublishTokensGuardCloudEventsButNotThePlayersPath(t *testing.T) {
	const token = "pub-token-0123456789"
	srv := ssetest.Start(t, broadcast.Options{}, server.Options{
		Access: access.Policy{Publishers: access.NewAuth([]string{token}, nil)},
	})
	stream := ssetest.Subscribe(t, srv.Client, srv.URL+"/events", nil)
	event := `{"specversion":"1.0","id":"1","source":"/s","type":"t"}`
	for _, c := range []struct{ authz, want string }{
		{"", "missing token"},
		{"Bearer wrong-token-0123456789", "invalid token"},
		{"Basic " + token, "invalid token"},
		{token, "invalid token"},
		{"Bearer ", "invalid token"},
	} {
		h := ct(ceStructured)
		if c.authz != "" {
			h.Set("Authorization", c.authz)
		}
		r := pushCE(t, srv, h, event)
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), c.want) ||
			!strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer ") {
			t.Errorf("Authorization %q: %d %s %v, want 401 %q", c.authz, r.Status, r.Body, r.Header, c.want)
		}
	}
	h := ct(ceStructured)
	h.Set("Authorization", "bearer "+token)
	if r := pushCE(t, srv, h, event); r.Status != http.StatusOK {
		t.Fatalf("with the token: %d %s", r.Status, r.Body)
	}
	if got := stream.NextData(t, within(t, 30*time.Second)); got != event {
		t.Fatalf("listener got %s", got)
	}
	srv.Publish(t, []byte(`{"player":1}`)) // no token: players cannot keep one
	if got := stream.NextData(t, within(t, 30*time.Second)); got != `{"player":1}` {
		t.Fatalf("listener got %s", got)
	}
	if got := srv.Hub.Stats().EventsAccepted; got != 2 {
		t.Fatalf("hub accepted %d events, want 2", got)
	}
}

// An adversarial pass: inputs built to cost much or break the translation
// get a precise answer, and the service keeps serving.
func TestCloudEventsAdversarialInputs(t *testing.T) {
	srv := ssetest.Start(t, broadcast.Options{QueueSize: 1 << 16}, server.Options{MaxBodyBytes: 16 << 20})
	valid := `"specversion":"1.0","id":"1","source":"/s","type":"t"`
	var attrs strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&attrs, `,"x%d":%d`, i, i)
	}
	var batch strings.Builder
	const tiny = 100_000
	batch.WriteByte('[')
	for i := range tiny {
		if i > 0 {
			batch.WriteByte(',')
		}
		fmt.Fprintf(&batch, `{"specversion":"1.0","id":"%d","source":"/s","type":"t"}`, i)
	}
	batch.WriteByte(']')
	cases := []struct {
		name   string
		header http.Header
		body   string
		status int
	}{
		{"a ce- header beyond the header limit", binary("", "Ce-Subject", strings.Repeat("%41", 8<<10)), ``, http.StatusRequestHeaderFieldsTooLarge},
		{"thousands of attributes", ct(ceStructured), `{` + valid + attrs.String() + `}`, http.StatusOK},
		{"thousands of attributes, the last a duplicate", ct(ceStructured), `{` + valid + attrs.String() + `,"x0":1}`, http.StatusBadRequest},
		{"data nested 100k deep", ct(ceStructured), `{` + valid + `,"data":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`, http.StatusBadRequest},
		{"a batch nested 100k deep", ct(ceBatch), strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000), http.StatusBadRequest},
		{"a batch of 100k tiny events", ct(ceBatch), batch.String(), http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := srv.Hub.Stats().EventsAccepted
			r := pushCE(t, srv, c.header, c.body)
			if r.Status != c.status {
				t.Fatalf("answer %d %.200s, want %d", r.Status, r.Body, c.status)
			}
			if c.status == http.StatusOK && strings.Contains(c.name, "batch") {
				if want := fmt.Sprintf(`"count":%d`, tiny); !strings.Contains(string(r.Body), want) {
					t.Fatalf("answer %s, want %s", r.Body, want)
				}
				if got := srv.Hub.Stats().EventsAccepted - before; got != tiny {
					t.Fatalf("hub accepted %d of the batch, want %d", got, tiny)
				}
			}
		})
	}
	if r := pushCE(t, srv, ct(ceStructured), `{`+valid+`}`); r.Status != http.StatusOK {
		t.Fatalf("after the adversarial pass: %d %s", r.Status, r.Body)
	}
}
