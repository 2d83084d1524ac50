package detectors

func init() {
	Register(Info{
		Name: "copod",
		Kind: KindBatch,
		Doc: "Copula-Based Outlier Detection (Li et al., ICDM 2020), as PyOD computes it: " +
			"parameter-free. The empirical copula of the training data gives each value its " +
			"left and right tail probabilities (as ecod, counting the scored row with the " +
			"training rows); per feature, the larger of the skewness-side −log tail and the " +
			"mean of both −log tails, summed over features. Same model and cost as ecod, which " +
			"takes the larger tail instead. Contributions: each feature's term.",
		NewBatch: func(Params, uint64) (Batch, error) { return NewCOPOD(), nil },
	})
}

// COPOD is the copod detector. The paper aggregates like ECOD's paper (the largest of
// three sums), which would make the two detectors one; PyOD's per-feature term is what its
// published figures measure, and what this reproduces. After Fit it is read-only, so Score
// and Contributions may be called from several goroutines at once.
type COPOD struct {
	tails   ecdfTails
	workers int
}

// NewCOPOD returns an unfitted copod detector.
func NewCOPOD() *COPOD { return &COPOD{} }

// SetWorkers implements Parallel.
func (c *COPOD) SetWorkers(n int) { c.workers = n }

// Fit implements Batch.
func (c *COPOD) Fit(X Matrix) error {
	if err := dpCheckMatrix("copod", X); err != nil {
		return err
	}
	return c.tails.fit("copod", X)
}

// term is feature j's share of the score of v: max(skew-side tail, mean of both tails).
// A feature without skewness (a constant one) takes both tails, as PyOD's sign arithmetic
// does.
func (c *COPOD) term(j int, v float64) float64 {
	l, r := c.tails.tails(j, v)
	var side float64
	switch c.tails.skew[j] {
	case -1:
		side = l
	case 1:
		side = r
	default:
		side = l + r
	}
	return max(side, (l+r)/2)
}

// Score implements Batch.
func (c *COPOD) Score(X Matrix, out []float64) error {
	if err := dpCheckScore("copod", X, out, c.tails.d); err != nil {
		return err
	}
	dpParallel(c.workers, X.Rows, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			s := 0.0
			for j, v := range X.Row(i) {
				s += c.term(j, v)
			}
			out[i] = s
		}
	})
	return nil
}

// Contributions implements Contributor: each feature's term.
func (c *COPOD) Contributions(x, contrib []float64) error {
	if err := dpCheckRow("copod", x, contrib, c.tails.d); err != nil {
		return err
	}
	sum := 0.0
	for j, v := range x {
		t := c.term(j, v)
		contrib[j] = t
		sum += t
	}
	normalizeShares(contrib, sum)
	return nil
}

const copodFormatV1 = 1

// MarshalBinary implements Persistent: version, then the tails model (as ecod's).
func (c *COPOD) MarshalBinary() ([]byte, error) { return c.tails.marshal("copod", copodFormatV1) }

// UnmarshalBinary implements Persistent. The worker count is a runtime setting and is kept.
func (c *COPOD) UnmarshalBinary(data []byte) error {
	return c.tails.unmarshal("copod", copodFormatV1, data)
}
