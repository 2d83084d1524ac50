package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/gonomaly/gonomaly/jobs"
)

// modelList is GET /models: the latest version of every trained model, by name.
type modelList struct {
	Models []jobs.Model `json:"models"`
}

// modelVersions is GET /models/{name}: every version of one model, newest first.
type modelVersions struct {
	Name     string       `json:"name"`
	Versions []jobs.Model `json:"versions"`
}

// listModels answers from this replica's view of the models topic, caught up first so
// that a model just trained through another replica's worker is listed; snapshots are
// left out (megabytes that mean nothing to people).
func (s *Server) listModels(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	syncView(c.Request().Context(), store.Models.Sync)
	out := modelList{Models: []jobs.Model{}}
	for _, name := range store.Models.Names() {
		if m, ok := store.Models.Latest(name); ok {
			out.Models = append(out.Models, m.WithoutSnapshot())
		}
	}
	return c.JSON(http.StatusOK, out)
}

// getModel lists a model's versions from the view caught up first, since a version may
// have been trained a moment ago through another worker.
func (s *Server) getModel(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	name := c.Param("name")
	if base, _, versioned := strings.Cut(name, "@"); versioned {
		return badRequest("name", "name: %q names a version; give the model name (%q) and the response lists every version", name, base)
	}
	if err := jobs.CheckModelName(name); err != nil {
		return problem(http.StatusNotFound, TypeBlank, "name", "no model %q: %v", name, err)
	}
	syncView(c.Request().Context(), store.Models.Sync)
	versions := store.Models.Versions(name)
	if len(versions) == 0 {
		return problem(http.StatusNotFound, TypeBlank, "name", "no model %q (a train job publishes one)", name)
	}
	out := modelVersions{Name: name, Versions: make([]jobs.Model, 0, len(versions))}
	for _, m := range slices.Backward(versions) {
		out.Versions = append(out.Versions, m.WithoutSnapshot())
	}
	return c.JSON(http.StatusOK, out)
}
