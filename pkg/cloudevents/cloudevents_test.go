package cloudevents_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"event-dispatcher/pkg/cloudevents"
)

func TestSplitFollowsStringsAndNesting(t *testing.T) {
	body := ` [ {"a":"],\"}","b":[1,{"c":"["}]} ,"x,]" ,	[[]] , 3 ]`
	var got []string
	if err := cloudevents.Split([]byte(body), func(ev []byte) error { got = append(got, string(ev)); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"a":"],\"}","b":[1,{"c":"["}]}`, `"x,]"`, `[[]]`, `3`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Split gave %q, want %q", got, want)
	}
}

func TestSplitRefusesWhatIsNotOneArray(t *testing.T) {
	for _, body := range []string{``, `{}`, `[`, `[1`, `[1,`, `[1]]`, `[1] [2]`, `[{"a":"]`, `[}]`} {
		err := cloudevents.Split([]byte(body), func([]byte) error { return nil })
		if !errors.Is(err, cloudevents.ErrInvalid) {
			t.Errorf("Split(%q) = %v, want an invalid batch", body, err)
		}
	}
}

func TestSplitNamesTheEvent(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	err := cloudevents.Split([]byte(`[1,2,3]`), func([]byte) error {
		if n++; n == 2 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || err.Error() != "event 2: boom" {
		t.Fatalf("Split = %v", err)
	}
}

func TestEncodeEscapesAttributeValues(t *testing.T) {
	attrs := []cloudevents.Attr{{Name: "id", Value: "a\"b\\c\x01\t\u00e9<"}}
	out, err := cloudevents.Encode(nil, attrs, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]string
	if err := json.Unmarshal(out, &back); err != nil || back["id"] != attrs[0].Value {
		t.Fatalf("Encode gave %s (%v), which does not decode to the value", out, err)
	}
	if string(out) != `{"id":"a\"b\\c\u0001\té<"}` {
		t.Fatalf("Encode gave %s", out)
	}
}

func TestDecodeHeader(t *testing.T) {
	for in, want := range map[string]string{"plain": "plain", "%41%62": "Ab", "100%25": "100%", "caf%c3%A9": "café", "": ""} {
		if got, err := cloudevents.DecodeHeader("x", in); err != nil || got != want {
			t.Errorf("DecodeHeader(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"%", "%4", "%g0", "a%%", "%c3", "\xff"} {
		if _, err := cloudevents.DecodeHeader("x", in); !errors.Is(err, cloudevents.ErrInvalid) {
			t.Errorf("DecodeHeader(%q) = %v, want an error", in, err)
		}
	}
}

func TestCheckIgnoresTheClientIPField(t *testing.T) {
	ev := []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","user_ip":"192.0.2.1"}`)
	if err := cloudevents.Check(ev, "user_ip"); err != nil {
		t.Fatalf("Check with the IP field ignored: %v", err)
	}
	if err := cloudevents.Check(ev, ""); err == nil {
		t.Fatal("user_ip is not a valid attribute name, yet Check accepted it")
	}
}

func TestCheckScalesToThousandsOfAttributes(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"specversion":"1.0","id":"1","source":"/s","type":"t"`)
	for i := range 5000 {
		b.WriteString(`,"x` + strings.Repeat("a", i%7) + strconv.Itoa(i) + `":1`)
	}
	b.WriteString(`,"x0":2}`) // a late duplicate
	err := cloudevents.Check([]byte(b.String()), "")
	if err == nil || !strings.Contains(err.Error(), `"x0": given twice`) {
		t.Fatalf("Check = %v, want the duplicate named", err)
	}
}

func TestModeOf(t *testing.T) {
	for ct, want := range map[string]cloudevents.Mode{
		"application/cloudevents+json": cloudevents.ModeStructured, "Application/CloudEvents+JSON; charset=UTF-8": cloudevents.ModeStructured,
		"application/cloudevents-batch+json": cloudevents.ModeBatch, "application/json": cloudevents.ModeBinary, "": cloudevents.ModeBinary,
	} {
		if got, err := cloudevents.ModeOf(ct); err != nil || got != want {
			t.Errorf("ModeOf(%q) = %v, %v; want %v", ct, got, err, want)
		}
	}
	for _, ct := range []string{"application/cloudevents+avro", "application/cloudevents-batch+protobuf", "application/cloudevents"} {
		if _, err := cloudevents.ModeOf(ct); !errors.Is(err, cloudevents.ErrFormat) {
			t.Errorf("ModeOf(%q) = %v, want ErrFormat", ct, err)
		}
	}
}
