package event

import (
	"sort"
	"testing"
)

// BenchmarkCompact measures the ingest hot path on each real message, with
// and without a client-IP field, appending into a reused buffer, strict
// (the default) and lenient side by side so that their ratio comes from one
// run.
func BenchmarkCompact(b *testing.B) {
	all := allFixtures(b)
	names := make([]string, 0, len(all))
	for name := range all {
		if name != invalidFixture {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	modes := []struct {
		name    string
		compact func(dst, body []byte, ipField, ip string) ([]byte, error)
	}{{"strict", Compact}, {"lenient", CompactLenient}}
	for _, name := range names {
		body := all[name]
		for _, field := range []string{"", "user_ip"} {
			label := name + "/plain"
			if field != "" {
				label = name + "/" + field
			}
			for _, m := range modes {
				b.Run(label+"/mode="+m.name, func(b *testing.B) {
					dst := make([]byte, 0, len(body)+64)
					b.ReportAllocs()
					b.SetBytes(int64(len(body)))
					for b.Loop() {
						var err error
						if dst, err = m.compact(dst[:0], body, field, "203.0.113.7"); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
