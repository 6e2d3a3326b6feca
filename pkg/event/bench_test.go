package event

import (
	"sort"
	"testing"
)

// BenchmarkCompact measures the ingest hot path on each real message, with
// and without a client-IP field, appending into a reused buffer.
func BenchmarkCompact(b *testing.B) {
	all := allFixtures(b)
	names := make([]string, 0, len(all))
	for name := range all {
		if name != invalidFixture {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		body := all[name]
		for _, field := range []string{"", "user_ip"} {
			label := name + "/plain"
			if field != "" {
				label = name + "/" + field
			}
			b.Run(label, func(b *testing.B) {
				dst := make([]byte, 0, len(body)+64)
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					var err error
					if dst, err = Compact(dst[:0], body, field, "203.0.113.7"); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
