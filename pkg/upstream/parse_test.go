package upstream

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

type got struct {
	typ, data string
	tooLarge  bool
}

// parseAll reads every block of stream, one byte per read when drip is set
// (a slow-drip upstream, every boundary split), and returns the blocks, the
// last id and the last retry.
func parseAll(t *testing.T, stream string, maxData int, drip bool) ([]got, string, int64) {
	t.Helper()
	var r io.Reader = strings.NewReader(stream)
	if drip {
		r = iotest.OneByteReader(r)
	}
	p := newParser(r, maxData, "")
	var out []got
	id := ""
	for {
		b, err := p.next()
		if v, ok := p.takeID(); ok {
			id = v
		}
		if errors.Is(err, io.EOF) {
			return out, id, p.retry
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, got{string(b.typ), string(b.data), b.tooLarge})
	}
}

func TestParserFollowsTheEventStreamSpec(t *testing.T) {
	for _, tc := range []struct {
		name, stream string
		want         []got
		id           string
		retry        int64
	}{
		{"wikimedia", "event: message\nid: [{\"topic\":\"t\",\"partition\":0,\"timestamp\":1}]\ndata: {\"a\":\ndata: 1}\n\n",
			[]got{{"message", "{\"a\":\n1}", false}}, `[{"topic":"t","partition":0,"timestamp":1}]`, -1},
		{"event-dispatcher preamble", "\ufeffretry: 1500\n\n: hb\n\ndata: {\"x\":1}\n\n", []got{{"", `{"x":1}`, false}}, "", 1500},
		{"CR line ends", "data: a\rdata: b\r\r", []got{{"", "a\nb", false}}, "", -1},
		{"CRLF line ends", "event: e\r\ndata: a\r\n\r\n", []got{{"e", "a", false}}, "", -1},
		{"no space after colon", "data:a\n\n", []got{{"", "a", false}}, "", -1},
		{"only one space dropped", "data:  a\n\n", []got{{"", " a", false}}, "", -1},
		{"field without colon", "data\n\n", []got{{"", "", false}}, "", -1},
		{"comment and unknown field", ": c\nfoo: bar\ndata: x\n\n", []got{{"", "x", false}}, "", -1},
		{"no data no event", "event: e\nid: 7\n\n", nil, "7", -1},
		{"id with NUL ignored", "id: 1\n\nid: a\x00b\ndata: x\n\n", []got{{"", "x", false}}, "1", -1},
		{"empty id clears", "id: 1\n\nid\n\n", nil, "", -1},
		{"unfinished last block dropped", "data: x\n\nid: 9\ndata: y", []got{{"", "x", false}}, "", -1},
		{"bad retry ignored", "retry: 12a\n\nretry: 0\n\nretry: -1\n\n", nil, "", 0},
		{"second BOM is data", "\ufeff\ufeffdata: x\n\n", nil, "", -1},
		{"event type reset", "event: a\ndata: 1\n\ndata: 2\n\n", []got{{"a", "1", false}, {"", "2", false}}, "", -1},
		{"too large data", "data: " + strings.Repeat("x", 100) + "\n\ndata: ok\n\n", []got{{"", "", true}, {"", "ok", false}}, "", -1},
		{"too large joined", "data: " + strings.Repeat("x", 20) + "\ndata: " + strings.Repeat("y", 20) + "\n\n", []got{{"", strings.Repeat("x", 20), true}}, "", -1},
		{"long comment skipped", ": " + strings.Repeat("c", 500) + "\ndata: ok\n\n", []got{{"", "ok", false}}, "", -1},
	} {
		for _, drip := range []bool{false, true} {
			name := tc.name
			if drip {
				name += "/one byte per read"
			}
			t.Run(name, func(t *testing.T) {
				blocks, id, retry := parseAll(t, tc.stream, 32, drip)
				if len(blocks) != len(tc.want) {
					t.Fatalf("blocks %+v, want %+v", blocks, tc.want)
				}
				for i := range blocks {
					if blocks[i] != tc.want[i] {
						t.Errorf("block %d = %+v, want %+v", i, blocks[i], tc.want[i])
					}
				}
				if id != tc.id || retry != tc.retry {
					t.Errorf("id %q retry %d, want %q %d", id, retry, tc.id, tc.retry)
				}
			})
		}
	}
}

// endless is a reader of one never-ending line: the parser must skip it
// with bounded memory and never return.
type endless struct{ left int }

func (e *endless) Read(p []byte) (int, error) {
	if e.left == 0 {
		return copy(p, "\n\ndata: after\n\n"), io.EOF
	}
	n := min(len(p), e.left)
	for i := range p[:n] {
		p[i] = 'x'
	}
	e.left -= n
	return n, nil
}

func TestHugeLineIsSkippedWithBoundedMemory(t *testing.T) {
	const size = 16 << 20
	p := newParser(io.MultiReader(strings.NewReader("data: "), &endless{left: size}), 1024, "")
	b, err := p.next()
	if err != nil || !b.tooLarge {
		t.Fatalf("first block %+v, %v: want too large", b, err)
	}
	if cap(p.line) > 1024+lineSlack+32<<10 {
		t.Errorf("the line buffer grew to %d bytes for a %d-byte line", cap(p.line), size)
	}
	b, err = p.next()
	if err != nil || string(b.data) != "after" {
		t.Fatalf("after the huge line: %q, %v", b.data, err)
	}
}
