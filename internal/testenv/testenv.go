// Package testenv decides what a test does when a program it needs
// (chromium, redis-server, nats-server, node, curl, terraform) is missing:
// under CI it fails, since .ci/run installs them all; elsewhere it is
// skipped, and Main prints one line saying what was skipped and why, so
// that a run that passes is not mistaken for one that checked everything.
package testenv

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// skipped records, for one test binary, the tests skipped for want of a
// program: reason → test names. A test binary is one process, and Main
// reads this once m.Run has returned.
var skipped = struct {
	sync.Mutex
	tests map[string][]string
}{tests: map[string][]string{}}

// InCI reports whether the tests run under CI (CI set to a true value, as
// CI services and .ci/run do): there, a missing program is a failure.
func InCI() bool {
	ci, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && ci
}

// Missing fails t under CI, or records reason and skips t elsewhere.
// reason says what is missing and how to get it, e.g. "no redis-server on
// this machine (apt-get install redis-server, or run .ci/run)".
func Missing(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s; under CI every test must run", reason)
	}
	skipped.Lock()
	skipped.tests[reason] = append(skipped.tests[reason], t.Name())
	skipped.Unlock()
	t.Skip(reason + " (skipped outside CI)")
}

// Skip records reason and skips t, under CI too: for a program .ci/run
// cannot install (terraform is not in Debian).
func Skip(t testing.TB, reason string) {
	t.Helper()
	skipped.Lock()
	skipped.tests[reason] = append(skipped.tests[reason], t.Name())
	skipped.Unlock()
	t.Skip(reason)
}

// Main runs the tests and, when some were skipped for want of a program,
// prints one line saying which and why, then exits with m.Run's code. Use
// it as TestMain(m) { testenv.Main(m) }, or call Report from a TestMain
// that does more.
func Main(m *testing.M) {
	code := m.Run()
	Report()
	os.Exit(code)
}

// Report prints the line Main prints: nothing when nothing was skipped.
//
// go test shows a passing package's output only with -v, so the line is
// written to the go command's own standard error when that is a terminal
// or a pipe (Linux: opened again through /proc), where it shows among the
// packages' results; else (a file, which the go command would write over)
// to this process's, shown with -v.
func Report() {
	line := summary()
	if line == "" {
		return
	}
	var w io.Writer = os.Stderr
	if f, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/2", os.Getppid()), os.O_WRONLY|os.O_APPEND, 0); err == nil {
		defer f.Close()
		if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
			w = f
		}
	}
	fmt.Fprintln(w, line)
}

// summary is the one line Report prints.
func summary() string {
	skipped.Lock()
	defer skipped.Unlock()
	if len(skipped.tests) == 0 {
		return ""
	}
	n := 0
	var why []string
	for reason, tests := range skipped.tests {
		n += len(tests)
		slices.Sort(tests)
		if len(tests) > 3 { // one line, however many
			tests = append(tests[:3:3], fmt.Sprintf("%d more", len(tests)-3))
		}
		why = append(why, fmt.Sprintf("%s (%s)", reason, strings.Join(tests, ", ")))
	}
	slices.Sort(why)
	return fmt.Sprintf("%s: %d test(s) skipped: %s", packagePath(), n, strings.Join(why, "; "))
}

// packagePath is the import path of the package under test.
func packagePath() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Path != "" {
		return strings.TrimSuffix(bi.Path, ".test")
	}
	return os.Args[0]
}
