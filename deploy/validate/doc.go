// Package validate checks gonomaly's deploy artifacts offline, as part of make test:
// the kustomize overlays (built with krusty and strictly decoded into their Kubernetes
// and KEDA types), the Grafana dashboard and Prometheus rules (every metric they name
// exists), and docker-compose.yml (loaded as `docker compose config` loads it, with
// compose-go, and every service runs a real command of the binary).
//
// It is its own module so that the Kubernetes libraries stay out of gonomaly's go.mod;
// its tests read the main module's sources as files, never import them.
package validate
