package api

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPICoversRoutes: the document describes exactly the routes echo serves —
// every registered route is in it, and it lists no route the server lacks.
func TestOpenAPICoversRoutes(t *testing.T) {
	s := newTestServer(t, Config{})
	rec := do(s.Handler(), "GET", "/openapi.json", "", "")
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	param := regexp.MustCompile(`:(\w+)`)
	var served, documented []string
	for _, r := range s.e.Routes() {
		if r.Method == "echo_route_not_found" {
			continue
		}
		served = append(served, r.Method+" "+param.ReplaceAllString(r.Path, "{$1}"))
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	if !slices.Equal(served, documented) {
		t.Fatalf("routes and OpenAPI differ:\nserved:     %v\ndocumented: %v", served, documented)
	}
	// Every $ref resolves.
	var all map[string]any
	json.Unmarshal(rec.Body.Bytes(), &all)
	for _, ref := range regexp.MustCompile(`"\$ref":\s*"#/([^"]+)"`).FindAllStringSubmatch(rec.Body.String(), -1) {
		var node any = all
		for _, part := range strings.Split(ref[1], "/") {
			m, ok := node.(map[string]any)
			if !ok || m[part] == nil {
				t.Fatalf("$ref #/%s does not resolve", ref[1])
			}
			node = m[part]
		}
	}
}
