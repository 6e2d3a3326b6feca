// Package viewer is the live page served at GET /: an HTML page, its
// script and its stylesheet, embedded in the binary, that tails the
// service's own stream in a browser. Nothing it loads comes from another
// origin, so it works offline and under the strict Content-Security-Policy
// it is served with.
package viewer

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Prefix is the path under which the page's script, stylesheet and icon
// are served.
const Prefix = "/viewer/"

// CSP allows the page to load only its own script, stylesheet and icon and
// to connect only to its own origin; no inline script or style, no
// framing, no form posting anywhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one embedded asset, ready to serve.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the page at "/" and each asset at its path under
// [Prefix] (see [AssetPaths]); the caller routes only those paths to it.
func Handler() http.Handler {
	files := load()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := "index.html"
		if r.URL.Path != "/" {
			name = strings.TrimPrefix(r.URL.Path, Prefix)
		}
		f, ok := files[name]
		if !ok {
			http.Error(w, "not found", http.StatusNotFound) // not routed here
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.contentType)
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")   // frame-ancestors, for browsers that predate it
		h.Set("Cache-Control", "no-cache") // revalidated by ETag: a new binary shows its new page
		h.Set("ETag", f.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

// AssetPaths lists the paths of the page's script, stylesheet and icon.
func AssetPaths() []string {
	var paths []string
	for name := range load() {
		if name != "index.html" {
			paths = append(paths, Prefix+name)
		}
	}
	slices.Sort(paths)
	return paths
}

// contentType is fixed here rather than taken from package mime, whose
// table depends on the host's mime.types files.
func contentType(ext string) string {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return "application/octet-stream"
}

// load reads every embedded asset once.
func load() map[string]file {
	files := map[string]file{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[strings.TrimPrefix(p, "assets/")] = file{
			body:        body,
			contentType: contentType(path.Ext(p)),
			etag:        `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("viewer: embedded assets unreadable: " + err.Error()) // a build defect, not a runtime condition
	}
	return files
}
