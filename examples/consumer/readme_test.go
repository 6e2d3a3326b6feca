package consumer_test

import (
	"os"
	"strings"
	"testing"
)

// README.md shows the consumer snippets as they are here, tested: a change
// to either side that is not copied to the other fails.
func TestReadmeShowsTheSnippets(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, fence, from string // from: where the shown part of the file starts
	}{
		{"listen.go", "```go\n", "import ("},
		{"listen.js", "```js\n", ""},
		{"listen.sh", "```bash\n", "# Prints"}, // without the #! line
	} {
		b, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		code := string(b)
		if i := strings.Index(code, tc.from); i >= 0 {
			code = code[i:]
		}
		block := tc.fence + strings.TrimRight(code, "\n") + "\n```\n"
		if !strings.Contains(string(readme), block) {
			t.Errorf("README.md does not show %s as it is; copy it into the %q block of \"Writing a consumer\"", tc.file, strings.TrimSpace(tc.fence))
		}
	}
}
