package upstream

import (
	"bufio"
	"bytes"
	"io"
)

// block is one event as the SSE stream defines it (WHATWG HTML, "Server-sent
// events", interpreting an event stream), handed over when a blank line
// ends it. Its slices are valid until the next call to [parser.next].
type block struct {
	typ      []byte // the event: field; empty means "message"
	data     []byte // the data: lines joined by \n
	tooLarge bool   // a line or the data went beyond the limit: data is cut, the event must be dropped
}

// parser reads an event stream with bounded memory: a line longer than the
// limit is counted and skipped as it streams by, never buffered, so a 1 GB
// line costs one buffer's worth of memory.
type parser struct {
	r      *bufio.Reader
	max    int    // the largest data a block may carry
	line   []byte // the current line, at most max+lineSlack bytes
	cut    bool   // the current line went beyond its cap
	skipLF bool   // the last line ended with CR: an LF right after it belongs to it
	bom    bool   // the first byte was checked for a byte order mark

	typ, data []byte
	tooLarge  bool

	idBuf  []byte // the last event ID buffer, committed to lastID at each blank line
	lastID []byte // the last event ID of a finished block
	idNew  bool   // lastID changed since the last call to takeID
	retry  int64  // the last retry: value in ms; -1 when none came
}

const bom = "\ufeff"

// lineSlack is room for a field name and its colon beyond the data limit.
const lineSlack = 64

// maxIDBytes bounds the id kept for Last-Event-ID: a longer one would not
// fit the upstream's request header limit and is ignored.
const maxIDBytes = 4096

// newParser reads r; lastID is the last event ID from earlier connections,
// so that an id: field that clears it counts as a change.
func newParser(r io.Reader, maxData int, lastID string) *parser {
	return &parser{r: bufio.NewReaderSize(r, 32<<10), max: maxData, retry: -1, idBuf: []byte(lastID), lastID: []byte(lastID)}
}

// next returns the next block with data, applying id: and retry: fields on
// the way. A block without data dispatches nothing (its id still counts).
// At the end of the stream it returns the reader's error (io.EOF for a
// clean end); an unfinished last block is discarded, as the spec says.
func (p *parser) next() (block, error) {
	for {
		line, err := p.readLine()
		if err != nil {
			return block{}, err
		}
		if len(line) == 0 && !p.cut {
			if !bytes.Equal(p.lastID, p.idBuf) {
				p.lastID, p.idNew = append(p.lastID[:0], p.idBuf...), true
			}
			if b, ok := p.dispatch(); ok {
				return b, nil
			}
			continue
		}
		p.field(line)
	}
}

// dispatch ends the current block: the data loses its last \n.
func (p *parser) dispatch() (block, bool) {
	defer func() { p.typ, p.data, p.tooLarge = p.typ[:0], p.data[:0], false }()
	if len(p.data) == 0 && !p.tooLarge {
		return block{}, false
	}
	data := p.data
	if n := len(data); n > 0 && data[n-1] == '\n' {
		data = data[:n-1]
	}
	return block{typ: p.typ, data: data, tooLarge: p.tooLarge}, true
}

// field applies one non-empty line.
func (p *parser) field(line []byte) {
	if line[0] == ':' {
		return // a comment, e.g. a heartbeat
	}
	name, value, found := bytes.Cut(line, []byte(":"))
	if found && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch string(name) {
	case "data":
		if p.cut || len(p.data)+len(value)+1 > p.max {
			p.tooLarge = true
			return
		}
		p.data = append(append(p.data, value...), '\n')
	case "event":
		if p.cut {
			p.tooLarge = true // an event type longer than an event: not one to keep
			return
		}
		p.typ = append(p.typ[:0], value...)
	case "id":
		if p.cut || len(value) > maxIDBytes || !headerSafe(value) {
			return // it could not be sent back as Last-Event-ID
		}
		p.idBuf = append(p.idBuf[:0], value...)
	case "retry":
		if p.cut || len(value) == 0 || len(value) > 12 || bytes.ContainsFunc(value, func(r rune) bool { return r < '0' || r > '9' }) {
			return
		}
		var ms int64
		for _, c := range value {
			ms = ms*10 + int64(c-'0')
		}
		p.retry = ms
	}
}

// headerSafe reports whether an id can be sent back in a request header:
// no NUL (the spec ignores such ids) and no other control character.
func headerSafe(v []byte) bool {
	for _, c := range v {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// readLine returns the next line without its end (CRLF, LF or CR). A line
// longer than its cap comes back cut, with p.cut set; the rest of it is read
// and thrown away.
func (p *parser) readLine() ([]byte, error) {
	p.line, p.cut = p.line[:0], false
	limit := p.max + lineSlack
	for {
		if p.r.Buffered() == 0 {
			if _, err := p.r.Peek(1); err != nil { // waits for the next read
				return nil, err
			}
		}
		buf, _ := p.r.Peek(p.r.Buffered()) // all that read brought, never an error
		if !p.bom {                        // one leading byte order mark is not part of the stream
			p.bom = true
			if b, _ := p.r.Peek(len(bom)); string(b) == bom {
				_, _ = p.r.Discard(len(bom))
			}
			continue
		}
		if p.skipLF {
			p.skipLF = false
			if buf[0] == '\n' {
				_, _ = p.r.Discard(1)
				continue
			}
		}
		i := bytes.IndexAny(buf, "\r\n")
		end := i
		if i < 0 {
			end = len(buf)
		}
		if room := limit - len(p.line); end > room {
			p.line, p.cut = append(p.line, buf[:max(room, 0)]...), true
		} else if !p.cut {
			p.line = append(p.line, buf[:end]...)
		}
		if i < 0 {
			_, _ = p.r.Discard(len(buf))
			continue
		}
		p.skipLF = buf[i] == '\r'
		_, _ = p.r.Discard(i + 1)
		return p.line, nil
	}
}

// takeID returns the last event ID when a finished block changed it since
// the last call. An id: in a block the stream never finished does not count.
func (p *parser) takeID() (string, bool) {
	if !p.idNew {
		return "", false
	}
	p.idNew = false
	return string(p.lastID), true
}
