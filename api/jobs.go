package api

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// Scaffolding: the job routes are being written; until then they answer 501.

func (s *Server) submitJob(c echo.Context) error { return notYet() }
func (s *Server) listJobs(c echo.Context) error  { return notYet() }
func (s *Server) getJob(c echo.Context) error    { return notYet() }
func (s *Server) cancelJob(c echo.Context) error { return notYet() }

func notYet() error { return problem(http.StatusNotImplemented, TypeBlank, "", "not implemented yet") }
