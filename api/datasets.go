package api

import "github.com/labstack/echo/v4"

// Scaffolding: the dataset and results routes are being written; until then they answer 501.

func (s *Server) uploadDataset(c echo.Context) error { return notYet() }
func (s *Server) getDataset(c echo.Context) error    { return notYet() }
func (s *Server) jobResults(c echo.Context) error    { return notYet() }
