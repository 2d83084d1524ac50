package validate

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose runs what `docker compose config` runs (compose-go: the Compose
// specification's JSON schema, interpolation, normalisation, and the consistency checks
// of references between services, volumes and networks) on a compose file, without a
// Docker engine or the compose plugin, neither of which is on this machine.
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{path},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(nil), // the file must not depend on the environment of whoever runs it
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func TestComposeConfigValidates(t *testing.T) {
	p, err := loadCompose(t, filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("docker compose config: %v", err)
	}
	if p.Name != "gonomaly" {
		t.Errorf("project name %q, want gonomaly", p.Name)
	}
	want := []string{"kafka", "topics", "stages", "api", "worker", "sink", "prometheus", "grafana"}
	names := p.ServiceNames()
	for _, s := range want {
		if !slices.Contains(names, s) {
			t.Errorf("service %q missing (have %v)", s, names)
		}
	}
	for name, svc := range p.Services {
		if svc.Build == nil {
			continue
		}
		// Resolved paths: the Dockerfile must exist where the build will look for it.
		df := svc.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(svc.Build.Context, df)
		}
		if _, err := os.Stat(df); err != nil {
			t.Errorf("service %s: Dockerfile %s: %v", name, df, err)
		}
	}
	out, err := p.MarshalYAML()
	if err != nil || len(out) == 0 {
		t.Fatalf("rendering the project: %v", err)
	}
}

// The validation must be able to fail: an unknown key, a type error and a dangling
// reference, each in an
// otherwise valid copy of the file, are rejected.
func TestComposeConfigRejectsBrokenFiles(t *testing.T) {
	orig := string(readFile(t, "docker-compose.yml"))
	cases := []struct{ name, from, to, wantErr string }{
		{"unknown top-level key", "name: gonomaly\n", "name: gonomaly\nservices_typo: 1\n", "services_typo"},
		{"wrong type", "  read_only: true", "  read_only: [yes]", "read_only"},
		{"unknown service in depends_on", "    kafka:\n      condition: service_healthy", "    kafka-missing:\n      condition: service_healthy", "kafka-missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(orig, c.from) {
				t.Fatalf("docker-compose.yml no longer contains %q: update the case", c.from)
			}
			path := filepath.Join(t.TempDir(), "docker-compose.yml")
			if err := os.WriteFile(path, []byte(strings.Replace(orig, c.from, c.to, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := loadCompose(t, path)
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("got %v, want an error naming %q", err, c.wantErr)
			}
		})
	}
}
