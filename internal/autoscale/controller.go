package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/telemetry"
)

// Defaults of Config.
const (
	// DefaultInterval is shorter than KEDA's pollingInterval (15 s): on one machine the
	// lag is a few requests to a nearby broker, and a local backlog drains in seconds,
	// so a 15 s poll would add members after the work is done. It matches the lag
	// metric's cache, so the dashboard and the controller see the same numbers.
	DefaultInterval = 5 * time.Second
	// DefaultCooldown is the deploy's scale-down stabilisation and KEDA cooldownPeriod
	// (300 s): every change rebalances the group and restarts moved partitions' models,
	// while an idle member costs little.
	DefaultCooldown = 5 * time.Minute
)

// Group is one consumer group the controller sizes.
type Group struct {
	Stage  string   // names the group in logs and metrics
	Group  string   // the consumer group whose lag is read
	Topics []string // the topics it reads
	// Policy; Max 0 means the partition count, and Max is never above it.
	Policy Policy
	// Scale makes n members run. It is called from one goroutine per group and returns
	// once members it stops have left the group; an error stops the controller.
	Scale func(ctx context.Context, n int) error
}

// LagFunc reads a group's total lag over the partitions of topics, and the number of
// those partitions.
type LagFunc func(ctx context.Context, group string, topics []string) (lag int64, partitions int, err error)

// KafkaLag reads lag with cluster.GroupLag, as `gonomaly lag` and the lag metrics do:
// a partition the group never committed counts whole (offsetResetPolicy earliest), and
// transaction markers and aborted records do not count. cl is a plain client.
func KafkaLag(cl *kgo.Client) LagFunc {
	return func(ctx context.Context, group string, topics []string) (int64, int, error) {
		lags, err := cluster.GroupLag(ctx, cl, group, topics...)
		if err != nil {
			return 0, 0, err
		}
		var total int64
		for _, pl := range lags {
			total += pl.Lag
		}
		return total, len(lags), nil
	}
}

// Event is one poll's outcome, for Config.OnPoll.
type Event struct {
	Stage      string
	Lag        int64
	Partitions int
	Decision   Decision
	From, To   int // members before and after the poll
}

// Config configures Run.
type Config struct {
	Interval time.Duration // between lag readings; default DefaultInterval
	// Cooldown is the scale-down stabilisation window; default DefaultCooldown.
	Cooldown time.Duration
	Lag      LagFunc // required
	// Registerer gets gonomaly_autoscale_replicas and gonomaly_autoscale_desired_replicas.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// OnPoll, if set, is told every poll's outcome after it took effect (tests).
	OnPoll func(Event)
	now    func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Cooldown <= 0 {
		c.Cooldown = DefaultCooldown
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// metrics are the controller's gauges, by stage.
type metrics struct {
	replicas, desired *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gonomaly_autoscale_replicas",
			Help: "Members of the stage's consumer group this process runs (gonomaly run --autoscale).",
		}, []string{"stage"}),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gonomaly_autoscale_desired_replicas",
			Help: "Members the stage's lag asks for at the last poll, before the scale-down cooldown.",
		}, []string{"stage"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.replicas, err = telemetry.RegisterOrExisting(reg, m.replicas); err != nil {
		return nil, err
	}
	if m.desired, err = telemetry.RegisterOrExisting(reg, m.desired); err != nil {
		return nil, err
	}
	return m, nil
}

// Run sizes every group until ctx is cancelled: it starts each at its minimum, then
// reads its lag at once and every Interval, scales up as soon as the lag asks for more
// members and down once it has asked for fewer for a whole Cooldown. It returns nil
// when ctx ends, or the first error of a Scale call (the other groups stop too).
// Members still running when it returns are the caller's to stop.
func Run(ctx context.Context, cfg Config, groups ...Group) error {
	if cfg.Lag == nil {
		return errors.New("autoscale: no lag source")
	}
	cfg = cfg.withDefaults()
	for _, g := range groups {
		p := g.Policy
		if p.Max == 0 {
			p.Max = max(p.Min, 1) // checked with the real partition count at every poll
		}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("autoscale %s: %w", g.Stage, err)
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, g := range groups {
		wg.Go(func() {
			if err := newLoop(cfg, m, g).run(ctx); err != nil && ctx.Err() == nil {
				once.Do(func() { first = err })
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}

// loop sizes one group.
type loop struct {
	cfg               Config
	g                 Group
	log               *slog.Logger
	replicas, desired prometheus.Gauge
	stab              Stabilizer
	current           int
	failing           bool // the last lag reading failed: log the next failure at debug
}

func newLoop(cfg Config, m *metrics, g Group) *loop {
	return &loop{
		cfg: cfg, g: g,
		log:      cfg.Logger.With("stage", g.Stage, "group", g.Group),
		replicas: m.replicas.WithLabelValues(g.Stage),
		desired:  m.desired.WithLabelValues(g.Stage),
		stab:     Stabilizer{Window: cfg.Cooldown},
	}
}

func (l *loop) run(ctx context.Context) error {
	if err := l.scale(ctx, l.g.Policy.Min); err != nil {
		return err
	}
	l.desired.Set(float64(l.current))
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		if err := l.poll(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (l *loop) scale(ctx context.Context, n int) error {
	if err := l.g.Scale(ctx, n); err != nil {
		return fmt.Errorf("autoscale %s to %d members: %w", l.g.Stage, n, err)
	}
	l.current = n
	l.replicas.Set(float64(n))
	return nil
}

// poll reads the lag once and applies the decision. A failed reading changes nothing
// (as an HPA without its metric): the members go on.
func (l *loop) poll(ctx context.Context) error {
	lagCtx, cancel := context.WithTimeout(ctx, max(l.cfg.Interval, 5*time.Second))
	lag, partitions, err := l.cfg.Lag(lagCtx, l.g.Group, l.g.Topics)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		level := slog.LevelWarn
		if l.failing {
			level = slog.LevelDebug
		}
		l.failing = true
		l.log.Log(ctx, level, "autoscale: cannot read the lag; members unchanged", "members", l.current, "err", err)
		return nil
	}
	l.failing = false
	p := l.g.Policy
	if p.Max == 0 || (partitions > 0 && p.Max > partitions) {
		p.Max = partitions
	}
	p.Max = max(p.Max, p.Min, 1)
	d := Decide(p, l.current, lag, partitions)
	l.desired.Set(float64(d.Desired))
	from := l.current
	next, held := l.stab.Stabilize(l.cfg.now(), l.current, d.Desired)
	reason := d.Reason
	if next > d.Desired {
		reason += fmt.Sprintf("; held at %d by the cooldown (the most desired in the last %s)", held, l.cfg.Cooldown)
	}
	if next != from {
		l.log.Info("autoscale: scaling", "from", from, "to", next, "desired", d.Desired, "lag", lag, "partitions", partitions, "active", d.Active, "reason", reason)
		if err := l.scale(ctx, next); err != nil {
			return err
		}
	} else {
		l.log.Debug("autoscale: no change", "members", from, "desired", d.Desired, "lag", lag, "partitions", partitions, "reason", reason)
	}
	if l.cfg.OnPoll != nil {
		l.cfg.OnPoll(Event{Stage: l.g.Stage, Lag: lag, Partitions: partitions, Decision: d, From: from, To: l.current})
	}
	return nil
}
