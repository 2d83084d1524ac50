// Package broker runs gonomaly's embedded Kafka-compatible broker: franz-go's kfake, one
// node, optionally persisted to a data directory so topics, offsets and groups survive a
// restart. It serves `gonomaly broker` and the in-process broker of `gonomaly run`.
package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Config says where the broker listens and keeps its data.
type Config struct {
	Listen     string // host:port; port 0 picks a free one
	DataDir    string // empty: in memory only
	Partitions int    // default partition count for auto-created topics
	SyncWrites bool   // fsync every produced batch (slower, crash-proof)
	Logger     *slog.Logger
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
}

// Start starts the broker and returns once it is accepting connections.
func Start(cfg Config) (*Broker, error) {
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker: --listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("broker: --listen %q: port must be 0..65535", cfg.Listen)
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.ClusterID("gonomaly-embedded"),
		// kfake listens on 127.0.0.1 unless told otherwise; honour the host we were given.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, portText))
		}),
	}
	if cfg.Logger != nil {
		opts = append(opts, kfake.WithLogger(slogAdapter{cfg.Logger}))
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("broker: data dir: %w", err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir))
		if cfg.SyncWrites {
			opts = append(opts, kfake.SyncWrites())
		}
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w", cfg.Listen, err)
	}
	addrs := c.ListenAddrs()
	if len(addrs) == 0 {
		c.Close()
		return nil, fmt.Errorf("broker: no listener on %s", cfg.Listen)
	}
	return &Broker{cluster: c, addr: addrs[0]}, nil
}

// Addr is the host:port clients connect to.
func (b *Broker) Addr() string { return b.addr }

// Cluster exposes the kfake cluster for fault injection in tests.
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Close stops the broker and, with a data dir, flushes its state to disk.
func (b *Broker) Close() { b.cluster.Close() }

// slogAdapter routes kfake's logs to slog. kfake logs a lot at debug; we keep its info
// and above.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Logf(level kfake.LogLevel, msg string, args ...any) {
	var l slog.Level
	switch level {
	case kfake.LogLevelError:
		l = slog.LevelError
	case kfake.LogLevelWarn:
		l = slog.LevelWarn
	case kfake.LogLevelInfo:
		l = slog.LevelDebug // kfake logs every request at info
	default:
		return
	}
	// Formatting costs more than the broker's work on hot paths: only when it is shown.
	if !a.l.Enabled(context.Background(), l) {
		return
	}
	a.l.Log(context.Background(), l, fmt.Sprintf(msg, args...), "component", "broker")
}
