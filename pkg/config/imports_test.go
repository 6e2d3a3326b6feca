package config

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"testing"
)

// Configuration reads BROKER_URL through package brokerurl and must not
// know the broker's own types.
func TestConfigDoesNotImportTheBroker(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); path == "event-dispatcher/pkg/broker" {
				t.Errorf("%s imports %s", name, path)
			}
		}
	}
}
