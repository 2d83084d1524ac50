package autoscale

import (
	"testing"
	"time"
)

// TestDecide checks the formula against KEDA's Kafka scaler (lag capped at partitions ×
// threshold with integer division, activity = lag > activation, scale from and to
// zero) and the HPA's AverageValue computation (ratio to current × target, 10 %
// tolerance, ceil, min/max, never below 1), including the examples of docs/scaling.md.
func TestDecide(t *testing.T) {
	detect := Policy{LagThreshold: 5000, ActivationLagThreshold: 8, Min: 1, Max: 8, Tolerance: DefaultTolerance}
	worker := Policy{LagThreshold: 2, Min: 0, Max: 8, Tolerance: DefaultTolerance}
	thousand := Policy{LagThreshold: 1000, Min: 1, Max: 8, Tolerance: DefaultTolerance}
	tests := []struct {
		name       string
		p          Policy
		current    int
		lag        int64
		partitions int
		want       int
		active     bool
		metricLag  int64
	}{
		// docs/scaling.md examples (8 partitions).
		{"doc: detect lag 12,000", detect, 1, 12_000, 8, 3, true, 12_000},
		{"doc: detect lag 100,000 capped at 8", detect, 1, 100_000, 8, 8, true, 40_000},
		{"doc: detect 3 replicas, lag 16,000 within tolerance", detect, 3, 16_000, 8, 3, true, 16_000},
		{"doc: detect 3 replicas, lag 17,000", detect, 3, 17_000, 8, 4, true, 17_000},
		{"doc: 8 partitions, 7 replicas reach 8", detect, 7, 1_000_000, 8, 8, true, 40_000},
		{"doc: idle exactly-once markers", detect, 1, 8, 8, 1, false, 8},
		{"doc: worker-train woken from zero", worker, 0, 5, 8, 1, true, 5},
		{"doc: worker-train 5 jobs", worker, 1, 5, 8, 3, true, 5},
		{"doc: worker queue drained", worker, 3, 0, 8, 0, false, 0},

		// HPA tolerance: ratio = lag / (threshold × current).
		{"within +10%: no change", thousand, 3, 3250, 8, 3, true, 3250},
		{"above +10%: ceil", thousand, 3, 3350, 8, 4, true, 3350},
		// 1 − 2200/2000 is −0.10000000000000009 in float64, as in the HPA's own
		// computation: just outside the tolerance.
		{"exactly +10%: float puts it outside", thousand, 2, 2200, 8, 3, true, 2200},
		{"exactly -10%: inside", thousand, 3, 2700, 8, 3, true, 2700},
		{"within -10%: no change", thousand, 3, 2750, 8, 3, true, 2750},
		{"below -10% but ceil rounds back", thousand, 3, 2050, 8, 3, true, 2050},
		{"below -10%: down", thousand, 3, 1999, 8, 2, true, 1999},
		{"no tolerance: any change", Policy{LagThreshold: 1000, Min: 1, Max: 8}, 3, 3050, 8, 4, true, 3050},

		// Bounds.
		{"lag 0 keeps the minimum", thousand, 4, 0, 8, 1, false, 0},
		{"min 2", Policy{LagThreshold: 1000, Min: 2, Max: 8, Tolerance: 0.1}, 4, 500, 8, 2, true, 500},
		{"max below partitions", Policy{LagThreshold: 1000, Min: 1, Max: 3, Tolerance: 0.1}, 1, 6000, 8, 3, true, 6000},
		{"current above max comes down", Policy{LagThreshold: 1000, Min: 1, Max: 3, Tolerance: 0.1}, 5, 5000, 8, 3, true, 5000},
		{"min 0 never desires 0 while active", worker, 2, 1, 8, 1, true, 1},

		// KEDA's cap: only when lag / threshold (integer division) exceeds partitions.
		{"lag just under the cap is not capped", Policy{LagThreshold: 1000, Min: 1, Max: 4, Tolerance: 0.1}, 1, 4999, 4, 4, true, 4999},
		{"lag over the cap", Policy{LagThreshold: 1000, Min: 1, Max: 4, Tolerance: 0.1}, 1, 5000, 4, 4, true, 4000},
		// The cap happens before the tolerance: with 12 partitions and 11 members, a
		// capped lag is 12/11 = 1.09 of what they carry, within 10 %, so KEDA and the
		// HPA stay at 11 however large the backlog.
		{"KEDA: cap then tolerance keeps 11 of 12", Policy{LagThreshold: 100, Min: 1, Max: 12, Tolerance: 0.1}, 11, 1_000_000, 12, 11, true, 1200},
		{"and 10 of 12 goes to 12", Policy{LagThreshold: 100, Min: 1, Max: 12, Tolerance: 0.1}, 10, 1_000_000, 12, 12, true, 1200},

		// Activation.
		{"from zero: inactive stays at zero", worker, 0, 0, 8, 0, false, 0},
		{"from zero: min 2 restored while inactive", Policy{LagThreshold: 2, Min: 2, Max: 8, Tolerance: 0.1}, 0, 0, 8, 2, false, 0},
		{"from zero: active starts at the minimum", Policy{LagThreshold: 2, Min: 3, Max: 8, Tolerance: 0.1}, 0, 100, 8, 3, true, 16},
		{"from zero: huge lag still wakes one (the HPA takes over next poll)", worker, 0, 1000, 8, 1, true, 16},
		{"lag at activation is inactive", Policy{LagThreshold: 5000, ActivationLagThreshold: 8, Min: 0, Max: 8, Tolerance: 0.1}, 1, 8, 8, 0, false, 8},
		{"lag above activation is active", Policy{LagThreshold: 5000, ActivationLagThreshold: 8, Min: 0, Max: 8, Tolerance: 0.1}, 1, 9, 8, 1, true, 9},
		{"activation irrelevant with min 1", detect, 3, 0, 8, 1, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.p.Validate(); err != nil {
				t.Fatal(err)
			}
			d := Decide(tc.p, tc.current, tc.lag, tc.partitions)
			if d.Desired != tc.want || d.Active != tc.active || d.MetricLag != tc.metricLag {
				t.Errorf("Decide(current %d, lag %d, partitions %d) = desired %d active %v metric %d, want %d %v %d (%s)",
					tc.current, tc.lag, tc.partitions, d.Desired, d.Active, d.MetricLag, tc.want, tc.active, tc.metricLag, d.Reason)
			}
			if d.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, p := range []Policy{
		{LagThreshold: 0, Min: 1, Max: 1},
		{LagThreshold: 1, ActivationLagThreshold: -1, Min: 1, Max: 1},
		{LagThreshold: 1, Min: -1, Max: 1},
		{LagThreshold: 1, Min: 3, Max: 2},
		{LagThreshold: 1, Min: 0, Max: 0},
		{LagThreshold: 1, Min: 1, Max: 1, Tolerance: -0.1},
	} {
		if p.Validate() == nil {
			t.Errorf("%+v: valid, want an error", p)
		}
	}
}

// TestStabilizer checks the HPA's stabilisation with an immediate scale-up and a
// scale-down window: down only to the most desired within the window.
func TestStabilizer(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	s := Stabilizer{Window: 60 * time.Second}
	steps := []struct {
		at               time.Duration
		current, desired int
		want, held       int
	}{
		{0, 1, 4, 4, 4},                 // up at once
		{10 * time.Second, 4, 2, 4, 4},  // down held: 4 was desired 10 s ago
		{30 * time.Second, 4, 6, 6, 6},  // up again at once
		{50 * time.Second, 6, 1, 6, 6},  // held
		{80 * time.Second, 6, 1, 6, 6},  // 6 was desired 50 s ago
		{91 * time.Second, 6, 1, 1, 1},  // 30 s recommendation left the window; only 1s since
		{100 * time.Second, 1, 1, 1, 1}, // stays
		{110 * time.Second, 1, 3, 3, 3},
		{120 * time.Second, 3, 2, 3, 3},
		{171 * time.Second, 3, 2, 2, 2}, // 110 s left the window
	}
	for i, st := range steps {
		got, held := s.Stabilize(t0.Add(st.at), st.current, st.desired)
		if got != st.want || held != st.held {
			t.Errorf("step %d (t+%s, current %d, desired %d): got %d held %d, want %d held %d", i, st.at, st.current, st.desired, got, held, st.want, st.held)
		}
	}
	if len(s.history) > 3 {
		t.Errorf("history keeps %d recommendations, want only the window's", len(s.history))
	}
}
