package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gonomaly/gonomaly/internal/autoscale"
	"github.com/gonomaly/gonomaly/processors"
)

// AutoscaleConfig sizes each stage's consumer group on its lag within this process
// (`gonomaly run --autoscale`, docs/scaling.md "Local autoscaling"): a stage runs
// between Min and Max members, each a runner with its own Kafka client, started and
// stopped by internal/autoscale with the formula KEDA applies on Kubernetes.
type AutoscaleConfig struct {
	Interval time.Duration // between lag readings; default autoscale.DefaultInterval
	Cooldown time.Duration // scale-down stabilisation window; default autoscale.DefaultCooldown
	// Min is the members a stage keeps at least; 0 lets an idle stage stop all of them
	// (`run` defaults to 1, as the deploy's minReplicaCount).
	Min int
	// Max is the members a stage runs at most; 0 or more than the partitions: the
	// partition count.
	Max int
	// LagThresholds is the lag one member should carry, by stage; a stage missing
	// takes DefaultLagThresholds.
	LagThresholds map[string]int64
	// ActivationLagThresholds, by stage (default 0): at or below it a stage is idle,
	// which matters only with Min 0. The deploy's 8 for detect and ensemble covers the
	// transaction markers KEDA counts; gonomaly's lag does not count them.
	ActivationLagThresholds map[string]int64
	// OnPoll, if set, is told every poll's outcome (tests).
	OnPoll func(autoscale.Event)
}

// DefaultLagThresholds are the lagThresholds of deploy/k8s's ScaledObjects.
var DefaultLagThresholds = map[string]int64{"preprocess": 10_000, "detect": 5_000, "ensemble": 10_000}

func (a *AutoscaleConfig) policy(stage string) autoscale.Policy {
	thr, ok := a.LagThresholds[stage]
	if !ok {
		thr = DefaultLagThresholds[stage]
	}
	return autoscale.Policy{
		LagThreshold:           thr,
		ActivationLagThreshold: a.ActivationLagThresholds[stage],
		Min:                    a.Min,
		Max:                    a.Max, // 0: the partitions, capped at them either way
		Tolerance:              autoscale.DefaultTolerance,
	}
}

// memberPool runs a stage's members: runners of one group, each with its own client.
// Members are numbered by slot; scaling down stops the highest slots, so the live slots
// are always 0..n-1 and a slot's transactional id is never used by two live members.
type memberPool struct {
	ctx       context.Context // the stages' run: cancelled, every member stops
	newRunner func(slot int) *processors.Runner
	fail      func(error) // a member failed: stop everything

	mu      sync.Mutex
	members []*member
	wg      sync.WaitGroup
}

type member struct {
	stop context.CancelFunc
	done chan struct{}
}

// scale makes n members run. Members it stops finish their in-flight records, commit
// and leave the group (processors.Runner.Run on cancel) before it returns.
func (p *memberPool) scale(ctx context.Context, n int) error {
	p.mu.Lock()
	for len(p.members) < n {
		if err := p.ctx.Err(); err != nil {
			p.mu.Unlock()
			return err
		}
		r := p.newRunner(len(p.members))
		mctx, stop := context.WithCancel(p.ctx)
		m := &member{stop: stop, done: make(chan struct{})}
		p.members = append(p.members, m)
		p.wg.Go(func() {
			defer close(m.done)
			if err := r.Run(mctx); err != nil && !errors.Is(err, context.Canceled) {
				p.fail(err)
			}
		})
	}
	var leaving []*member
	for len(p.members) > n {
		last := len(p.members) - 1
		leaving = append(leaving, p.members[last])
		p.members = p.members[:last]
	}
	p.mu.Unlock()
	// Stopped together, so that their leaves usually fall into one rebalance of the
	// group rather than one after another.
	for _, m := range leaving {
		m.stop()
	}
	for _, m := range leaving {
		select {
		case <-m.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// wait returns once every member has stopped; they stop when the pool's context ends.
func (p *memberPool) wait() { p.wg.Wait() }

// memberTransactionalID is the transactional id prefix of a stage member: slot 0 keeps
// the runner's default ("gonomaly-<host>-<pid>-"), further slots add their number, so
// that the members of one group in one process never fence each other.
func memberTransactionalID(slot int) string {
	if slot == 0 {
		return ""
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("gonomaly-%s-%d-%d-", host, os.Getpid(), slot)
}

// memberMetrics gives a member the stage's metrics, with its own share of the
// assigned-partitions gauge: each runner sets the count it owns, and the stage's gauge
// must show what the process owns, the sum over its members.
func memberMetrics(stage *processors.StageMetrics) *processors.StageMetrics {
	m := *stage
	m.Partitions = &gaugeShare{Gauge: stage.Partitions}
	return &m
}

// gaugeShare is one contributor's part of a shared gauge: Set moves the shared gauge by
// the change of this part, so the shared gauge is the sum of the parts.
type gaugeShare struct {
	prometheus.Gauge // the shared gauge
	mu               sync.Mutex
	own              float64
}

func (g *gaugeShare) Set(v float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Gauge.Add(v - g.own)
	g.own = v
}

func (g *gaugeShare) Add(d float64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Gauge.Add(d)
	g.own += d
}

func (g *gaugeShare) Sub(d float64) { g.Add(-d) }
func (g *gaugeShare) Inc()          { g.Add(1) }
func (g *gaugeShare) Dec()          { g.Add(-1) }
