// Package autoscale sizes consumer groups on their lag the way KEDA's Kafka scaler and
// the Kubernetes HorizontalPodAutoscaler do (docs/scaling.md), for `gonomaly run
// --autoscale`: one process grows and shrinks the number of members of each stage's
// group instead of a cluster changing the number of pods.
//
// Decide is the formula, pure and table-tested against KEDA and HPA semantics;
// Stabilizer is the HPA's scale-down stabilisation window; Run is the loop that reads
// each group's lag every interval and starts or stops members through a callback.
package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// DefaultTolerance is the HPA's default tolerance: no change while the lag is within
// 10 % of what the running members are meant to carry.
const DefaultTolerance = 0.1

// Policy is one group's scaling settings, named after a ScaledObject's fields.
type Policy struct {
	// LagThreshold is the backlog one member should carry (lagThreshold, the HPA's
	// AverageValue target); > 0.
	LagThreshold int64
	// ActivationLagThreshold: while the lag is at most this the group is inactive, and
	// with Min 0 it drops to no member (after the cooldown). With Min ≥ 1 it changes
	// nothing, as in KEDA.
	ActivationLagThreshold int64
	// Min and Max bound the members (minReplicaCount, maxReplicaCount). Max is capped
	// at the partition count by the caller: more members than partitions would idle.
	Min, Max int
	// Tolerance is the HPA's: no change while lag / (LagThreshold × current) is within
	// 1 ± Tolerance. Kubernetes uses DefaultTolerance; zero rescales on any change.
	Tolerance float64
}

// Validate reports a policy Decide cannot use.
func (p Policy) Validate() error {
	switch {
	case p.LagThreshold <= 0:
		return fmt.Errorf("lag threshold %d: must be positive", p.LagThreshold)
	case p.ActivationLagThreshold < 0:
		return fmt.Errorf("activation lag threshold %d: must not be negative", p.ActivationLagThreshold)
	case p.Min < 0:
		return fmt.Errorf("min %d: must not be negative", p.Min)
	case p.Max < max(p.Min, 1):
		return fmt.Errorf("max %d: must be at least min (%d) and 1", p.Max, p.Min)
	case p.Tolerance < 0 || math.IsNaN(p.Tolerance):
		return errors.New("tolerance must not be negative")
	}
	return nil
}

// Decision is what the formula asks for at one reading of the lag.
type Decision struct {
	// Desired is the member count the lag asks for now, before the scale-down window.
	Desired int
	// Active is KEDA's trigger activity: lag > ActivationLagThreshold.
	Active bool
	// MetricLag is the lag handed to the HPA: capped at partitions × LagThreshold, as
	// KEDA's scaler does when idle consumers are not allowed.
	MetricLag int64
	// Reason says, for the log, which rule decided.
	Reason string
}

// Decide applies KEDA's Kafka scaler and the HPA to one reading: lag is the group's
// total lag over partitions, current the members running now. In order:
//
//	active    = lag > activation
//	metricLag = partitions × threshold   if lag / threshold > partitions (integer division), else lag
//	current 0 → min, or max(min, 1) when active        (KEDA starts the first member)
//	ratio     = metricLag / (threshold × current)
//	desired   = current if |1 − ratio| ≤ tolerance, else ceil(metricLag / threshold)
//	desired   = clamp(desired, max(min, 1), max)       (the HPA never goes below 1)
//	inactive and min 0 → 0                             (KEDA deactivates the group)
func Decide(p Policy, current int, lag int64, partitions int) Decision {
	d := Decision{Active: lag > p.ActivationLagThreshold, MetricLag: lag}
	capped := false
	if partitions > 0 && lag/p.LagThreshold > int64(partitions) {
		d.MetricLag, capped = int64(partitions)*p.LagThreshold, true
	}
	hpaMin := max(p.Min, 1)
	if current <= 0 {
		// The HPA does not run at zero replicas; KEDA starts the group when its trigger
		// is active and keeps it at the minimum otherwise.
		if d.Active {
			d.Desired = hpaMin
			d.Reason = fmt.Sprintf("lag %d > activation %d: starting the group at %d", lag, p.ActivationLagThreshold, hpaMin)
		} else {
			d.Desired = p.Min
			d.Reason = fmt.Sprintf("lag %d ≤ activation %d: inactive, at the minimum %d", lag, p.ActivationLagThreshold, p.Min)
		}
		return d
	}
	if capped {
		d.Reason = fmt.Sprintf("lag %d capped at %d partitions × threshold = %d; ", lag, partitions, d.MetricLag)
	}
	ratio := float64(d.MetricLag) / (float64(p.LagThreshold) * float64(current))
	if math.Abs(1-ratio) <= p.Tolerance {
		d.Desired = current
		d.Reason += fmt.Sprintf("lag %d is %.2f× what %d members carry (threshold %d), within the tolerance %.0f%%",
			d.MetricLag, ratio, current, p.LagThreshold, p.Tolerance*100)
	} else {
		d.Desired = int((d.MetricLag + p.LagThreshold - 1) / p.LagThreshold)
		d.Reason += fmt.Sprintf("ceil(lag %d / threshold %d) = %d", d.MetricLag, p.LagThreshold, d.Desired)
	}
	switch {
	case d.Desired < hpaMin:
		d.Desired = hpaMin
		d.Reason += fmt.Sprintf(", raised to the minimum %d", hpaMin)
	case d.Desired > p.Max:
		d.Desired = p.Max
		d.Reason += fmt.Sprintf(", capped at the maximum %d", p.Max)
	}
	if !d.Active && p.Min == 0 {
		d.Desired = 0
		d.Reason = fmt.Sprintf("lag %d ≤ activation %d: inactive, no member needed", lag, p.ActivationLagThreshold)
	}
	return d
}

// Stabilizer is the HPA's stabilisation with scaleUp.stabilizationWindowSeconds 0 and
// scaleDown.stabilizationWindowSeconds Window: up at once to what is desired, down only
// to the highest count desired within the last Window. A group therefore scales down
// once the lag has said so for a whole window, and with Min 0 drops to zero a Window
// after its trigger was last active (KEDA's cooldownPeriod).
type Stabilizer struct {
	Window  time.Duration
	history []recommendation
}

type recommendation struct {
	at      time.Time
	desired int
}

// Stabilize records desired at now and returns the count to run, given current.
// held is the highest count desired within the window (what a scale-down stops at).
func (s *Stabilizer) Stabilize(now time.Time, current, desired int) (next, held int) {
	cutoff := now.Add(-s.Window)
	kept := s.history[:0]
	held = desired
	for _, r := range s.history {
		if r.at.After(cutoff) {
			kept = append(kept, r)
			held = max(held, r.desired)
		}
	}
	s.history = append(kept, recommendation{now, desired})
	next = current
	if next < desired {
		next = desired
	}
	if next > held {
		next = held
	}
	return next, held
}
