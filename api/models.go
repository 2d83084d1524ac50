package api

import "github.com/labstack/echo/v4"

// Scaffolding: the model routes are being written; until then they answer 501.

func (s *Server) listModels(c echo.Context) error { return notYet() }
func (s *Server) getModel(c echo.Context) error   { return notYet() }
