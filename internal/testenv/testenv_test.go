package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Outside CI a missing program skips the test and names it in the summary
// line, with the reason; Skip does the same under CI.
func TestMissingSkipsAndIsReported(t *testing.T) {
	t.Setenv("CI", "")
	skipped.Lock()
	skipped.tests = map[string][]string{} // -count above 1
	skipped.Unlock()
	for _, name := range []string{"a", "b", "c", "d"} {
		t.Run(name, func(t *testing.T) { Missing(t, "no frob (apt-get install frob)") })
	}
	t.Run("optional", func(t *testing.T) {
		t.Setenv("CI", "true")
		Skip(t, "no quux on PATH")
		t.Error("Skip did not skip")
	})
	line := summary()
	for _, want := range []string{
		"event-dispatcher/internal/testenv: 5 test(s) skipped: ",
		"no frob (apt-get install frob) (TestMissingSkipsAndIsReported/a, TestMissingSkipsAndIsReported/b, TestMissingSkipsAndIsReported/c, 1 more)",
		"no quux on PATH (TestMissingSkipsAndIsReported/optional)",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("summary %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "\n") {
		t.Errorf("summary %q is not one line", line)
	}
}

// Under CI a missing program fails the test: run in a child process, since
// the failure would fail this test.
func TestMissingFailsUnderCI(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Missing(t, "no frob")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMissingFailsUnderCI$")
	cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "CI=true")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no frob; under CI every test must run") || !strings.Contains(string(out), "--- FAIL") {
		t.Errorf("under CI: err %v, output:\n%s", err, out)
	}
}
