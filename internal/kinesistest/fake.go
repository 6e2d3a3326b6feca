package kinesistest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"
)

// Call is one PutRecords request the fake received.
type Call struct {
	At        time.Time
	AccessKey string // of the request's signature
	Records   []Entry
	Bytes     int // data and keys
	Status    int // what the fake answered
}

// Entry is one record of a call.
type Entry struct {
	Data []byte `json:"Data"` // base64 in JSON, decoded here
	Key  string `json:"PartitionKey"`
}

// Answer is what the fake does with one call: a whole-call error (Status
// and Code), or 200 with the records whose index is in FailCodes failed
// with that code.
type Answer struct {
	Status    int            // 0: 200
	Code      string         // the error's __type when Status is not 200
	FailCodes map[int]string // index → ErrorCode (ProvisionedThroughputExceededException, InternalFailure)
}

// Fake speaks the Kinesis JSON protocol (x-amz-json-1.1) for PutRecords:
// it answers each call with what Decide returns, and keeps every call and
// every record it accepted.
type Fake struct {
	URL string

	mu       sync.Mutex
	decide   func(n int, c Call) Answer
	calls    []Call
	accepted []Entry
}

// NewFake starts a fake answering every call with success until
// [Fake.Decide] says otherwise. It is closed at the test's cleanup.
func NewFake(t testing.TB) *Fake {
	f := &Fake{}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Decide sets how the following calls are answered: fn gets the call's
// number (from 0, counting every call so far) and the call.
func (f *Fake) Decide(fn func(n int, c Call) Answer) {
	f.mu.Lock()
	f.decide = fn
	f.mu.Unlock()
}

// Calls returns every call so far.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Accepted returns every record answered with success, in order.
func (f *Fake) Accepted() []Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.accepted)
}

func (f *Fake) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Amz-Target") != "Kinesis_20131202.PutRecords" {
		writeErr(w, http.StatusBadRequest, "UnknownOperationException")
		return
	}
	body, err := io.ReadAll(r.Body)
	var in struct {
		StreamName string
		StreamARN  string
		Records    []Entry
	}
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil || (in.StreamName == "" && in.StreamARN == "") {
		writeErr(w, http.StatusBadRequest, "SerializationException")
		return
	}
	c := Call{At: time.Now(), Records: in.Records}
	if m := credential.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		c.AccessKey = m[1]
	}
	for _, e := range in.Records {
		c.Bytes += len(e.Data) + len(e.Key)
	}
	f.mu.Lock()
	var a Answer
	if f.decide != nil {
		a = f.decide(len(f.calls), c)
	}
	c.Status = max(a.Status, http.StatusOK)
	f.calls = append(f.calls, c)
	if c.Status != http.StatusOK {
		f.mu.Unlock()
		writeErr(w, c.Status, a.Code)
		return
	}
	type result struct {
		SequenceNumber string `json:",omitempty"`
		ShardId        string `json:",omitempty"`
		ErrorCode      string `json:",omitempty"`
		ErrorMessage   string `json:",omitempty"`
	}
	out := struct {
		FailedRecordCount int
		Records           []result
	}{}
	for i, e := range in.Records {
		if code, ok := a.FailCodes[i]; ok {
			out.FailedRecordCount++
			out.Records = append(out.Records, result{ErrorCode: code, ErrorMessage: "failed by the test"})
			continue
		}
		f.accepted = append(f.accepted, e)
		out.Records = append(out.Records, result{SequenceNumber: fmt.Sprint(len(f.accepted)), ShardId: "shardId-000000000000"})
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

var credential = regexp.MustCompile(`Credential=([^/]+)/`)

func writeErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"__type":%q,"message":"answered by the test"}`, code)
}
