package detectors

import (
	"fmt"
	"math"
	"strings"
)

func init() {
	Register(Info{
		Name: "seasonal",
		Kind: KindStreaming,
		Doc: "Seasonal profiles per series and feature: a robust level and spread for every bin of " +
			"the day (`bins_per_day`) and of the week (7 × bins_per_day), plus one overall, each " +
			"updated when a record falls in it with exponential forgetting (`alpha`) and with the " +
			"residual clipped at 3 spreads, so that anomalies barely move the profile they are " +
			"judged by. A record is judged by the most specific bin that has seen `min_samples` " +
			"records (week, else day, else overall); the score is the largest |x − level| / " +
			"(1.2533 × spread) over the features, before x is learned. Uses the record's timestamp " +
			"when the stage passes it (TimeAware), else assumes records `step_seconds` apart. " +
			"NaN until a feature has min_samples records.",
		Params: []Param{
			{Name: "bins_per_day", Doc: "bins of the daily profile (24: hourly); the weekly one has 7× as many", Default: 24, Min: 1, Max: 288, Integer: true},
			{Name: "weekly", Doc: "1 keeps the weekly profile (7 × bins_per_day bins a feature), 0 only the daily one", Default: 1, Min: 0, Max: 1, Integer: true},
			{Name: "alpha", Doc: "weight of the newest record in its bin: a bin remembers about 1/alpha of its visits", Default: 0.1, Min: 0.001, Max: 1},
			{Name: "min_samples", Doc: "records a bin needs before it judges; until then a coarser profile does", Default: 4, Min: 2, Max: 1000, Integer: true},
			{Name: "step_seconds", Doc: "time between records assumed when no timestamp is passed", Default: 300, Min: 0.001, Max: 604800},
			{Name: "utc_offset_hours", Doc: "the profiles' local time, in hours east of UTC", Default: 0, Min: -14, Max: 14},
		},
		NewStreaming: func(p Params, _ uint64) (Streaming, error) {
			return NewSeasonal(SeasonalConfig{
				BinsPerDay: p.Int("bins_per_day"), Weekly: p["weekly"] == 1, Alpha: p["alpha"], MinSamples: p.Int("min_samples"),
				StepSeconds: p["step_seconds"], UTCOffsetHours: p["utc_offset_hours"],
			})
		},
	})
}

// TimeAware is a streaming detector that can use the record's timestamp. The detect stage
// calls ScoreLearnAt instead of ScoreLearn when a detector implements it; ScoreLearn stays
// the fallback and must give sensible results without timestamps.
type TimeAware interface {
	// ScoreLearnAt is ScoreLearn for a record stamped tsMillis (Unix epoch milliseconds).
	ScoreLearnAt(series string, tsMillis int64, x, contrib []float64) float64
}

// SeasonalConfig is the shape of a seasonal detector.
type SeasonalConfig struct {
	BinsPerDay     int     // bins of the daily profile
	Weekly         bool    // keep a weekly profile of 7·BinsPerDay bins
	Alpha          float64 // forgetting per visit of a bin
	MinSamples     int     // visits before a bin judges
	StepSeconds    float64 // assumed spacing of records without timestamps
	UTCOffsetHours float64 // local time of the profiles
}

const (
	// seasonalClip is how many spreads a residual may move a mature bin: an anomaly moves
	// the level at most alpha·3 spreads, and the spread at most by a factor 1 + 2·alpha.
	seasonalClip = 3
	// seasonalSDScale turns a mean absolute deviation into a standard deviation for normal
	// data (√(π/2)), so scores read like z-scores.
	seasonalSDScale = 1.2533141373155003
	// seasonalValueClip bounds values so that residuals of ±MaxFloat64 cannot overflow.
	seasonalValueClip = 1e100
	msPerDay          = 86_400_000
)

// seasonalBin is one bin's robust estimate: n visits, level, and mean absolute deviation.
type seasonalBin struct {
	level, spread float64
	n             uint32
}

// Seasonal is the seasonal detector: per series, per feature, an overall bin, the daily
// profile and the weekly one.
type Seasonal struct {
	cfg    SeasonalConfig
	stepMs int64 // StepSeconds in milliseconds, at least 1
	offMs  int64 // UTCOffsetHours in milliseconds
	nb     int   // bins per feature: 1 + BinsPerDay (+ 7·BinsPerDay)
	series map[string]*seasonalState
}

// seasonalState is one series: its bins feature after feature, and the time of its last
// record.
type seasonalState struct {
	bins   []seasonalBin
	lastMs int64
}

// NewSeasonal checks cfg and returns an empty detector.
func NewSeasonal(cfg SeasonalConfig) (*Seasonal, error) {
	switch {
	case cfg.BinsPerDay < 1 || cfg.BinsPerDay > 1440:
		return nil, fmt.Errorf("seasonal: bins_per_day = %d must be in [1, 1440]", cfg.BinsPerDay)
	case !(cfg.Alpha > 0 && cfg.Alpha <= 1):
		return nil, fmt.Errorf("seasonal: alpha = %v must be in (0, 1]", cfg.Alpha)
	case cfg.MinSamples < 1 || cfg.MinSamples > 1<<20:
		return nil, fmt.Errorf("seasonal: min_samples = %d must be in [1, %d]", cfg.MinSamples, 1<<20)
	case !(cfg.StepSeconds > 0 && cfg.StepSeconds <= 1e9):
		return nil, fmt.Errorf("seasonal: step_seconds = %v must be in (0, 1e9]", cfg.StepSeconds)
	case !(cfg.UTCOffsetHours >= -24 && cfg.UTCOffsetHours <= 24):
		return nil, fmt.Errorf("seasonal: utc_offset_hours = %v must be in [-24, 24]", cfg.UTCOffsetHours)
	}
	s := &Seasonal{
		cfg:    cfg,
		stepMs: max(1, int64(math.Round(cfg.StepSeconds*1000))),
		offMs:  int64(math.Round(cfg.UTCOffsetHours * 3_600_000)),
		nb:     1 + cfg.BinsPerDay,
		series: make(map[string]*seasonalState),
	}
	if cfg.Weekly {
		s.nb += 7 * cfg.BinsPerDay
	}
	return s, nil
}

// BytesPerSeries is the state a series of d features holds.
func (s *Seasonal) BytesPerSeries(d int) int { return d * s.nb * 24 }

// Len is the number of series held.
func (s *Seasonal) Len() int { return len(s.series) }

// Forget drops a series' state, for callers that evict idle series.
func (s *Seasonal) Forget(series string) { delete(s.series, series) }

// ScoreLearn implements Streaming for records without timestamps: each is taken to come
// step_seconds after the series' previous one (the first at the Unix epoch, a Thursday).
func (s *Seasonal) ScoreLearn(series string, x, contrib []float64) float64 {
	st := s.state(series, len(x))
	return s.scoreLearn(st, st.lastMs+s.stepMs, x, contrib)
}

// ScoreLearnAt implements TimeAware. Records may come out of order: each is binned by its
// own timestamp.
func (s *Seasonal) ScoreLearnAt(series string, tsMillis int64, x, contrib []float64) float64 {
	return s.scoreLearn(s.state(series, len(x)), tsMillis, x, contrib)
}

// state returns the series' state, starting it over if its width changed.
func (s *Seasonal) state(series string, d int) *seasonalState {
	st := s.series[series]
	if st == nil || len(st.bins) != d*s.nb {
		st = &seasonalState{bins: make([]seasonalBin, d*s.nb), lastMs: -s.stepMs}
		s.series[strings.Clone(series)] = st // clone: do not pin the caller's message buffer
	}
	return st
}

// binsAt returns the daily and weekly bins (offsets within a feature's bins) of a time.
func (s *Seasonal) binsAt(tsMillis int64) (day, week int) {
	local := tsMillis + s.offMs
	days := local / msPerDay
	ms := local - days*msPerDay
	if ms < 0 { // floor division for times before the epoch
		ms += msPerDay
		days--
	}
	b := s.cfg.BinsPerDay
	hd := int(ms * int64(b) / msPerDay)
	day = 1 + hd
	if s.cfg.Weekly {
		dow := int((days%7 + 7 + 3) % 7) // 1970-01-01 was a Thursday; Monday is 0
		week = 1 + b + dow*b + hd
	}
	return day, week
}

func (s *Seasonal) scoreLearn(st *seasonalState, tsMillis int64, x, contrib []float64) float64 {
	st.lastMs = tsMillis
	day, week := s.binsAt(tsMillis)
	minN := uint32(s.cfg.MinSamples)
	var fs featureScores
	for f, v := range x {
		bins := st.bins[f*s.nb : (f+1)*s.nb : (f+1)*s.nb]
		zf := 0.0
		if finite(v) {
			v = min(max(v, -seasonalValueClip), seasonalValueClip)
			// The most specific profile that has seen enough of this time judges.
			judge := &bins[0]
			if s.cfg.Weekly && bins[week].n >= minN {
				judge = &bins[week]
			} else if bins[day].n >= minN {
				judge = &bins[day]
			}
			if judge.n >= minN {
				sd := seasonalSDScale * max(judge.spread, madFloorRel*(math.Abs(judge.level)+1))
				zf = min(math.Abs(v-judge.level)/sd, scoreCap)
				fs.ready = true
			}
			s.learn(&bins[0], v)
			s.learn(&bins[day], v)
			if s.cfg.Weekly {
				s.learn(&bins[week], v)
			}
		}
		fs.add(contrib, f, zf, zf)
	}
	return fs.result(contrib, len(x))
}

// learn moves a bin towards v. Its first min_samples visits are plain running means of the
// value and of the absolute residual (a = 1/n), which have nothing to be robust against
// yet; later visits weigh alpha (or 1/n while that is larger) and clip the residual at
// seasonalClip spreads.
func (s *Seasonal) learn(b *seasonalBin, v float64) {
	if b.n < math.MaxUint32 {
		b.n++
	}
	if b.n == 1 {
		b.level, b.spread = v, 0
		return
	}
	a := max(s.cfg.Alpha, 1/float64(b.n))
	r := v - b.level
	abs := math.Abs(r)
	if b.n > uint32(s.cfg.MinSamples) {
		c := seasonalClip * max(b.spread, madFloorRel*(math.Abs(b.level)+1))
		r = min(max(r, -c), c)
		abs = min(abs, c)
	}
	b.level += a * r
	b.spread += a * (abs - b.spread)
}

// MarshalBinary implements Persistent: the configuration, then every series (sorted by
// name) with its width, the time of its last record and the bins that have seen any.
func (s *Seasonal) MarshalBinary() ([]byte, error) {
	w := newSnapWriter(snapSeasonal, 64)
	w.int(s.cfg.BinsPerDay)
	w.boolean(s.cfg.Weekly)
	w.f64(s.cfg.Alpha)
	w.int(s.cfg.MinSamples)
	w.f64(s.cfg.StepSeconds)
	w.f64(s.cfg.UTCOffsetHours)
	w.int(len(s.series))
	for _, name := range sortedKeys(s.series) {
		st := s.series[name]
		w.str(name)
		w.int(len(st.bins) / s.nb)
		w.ivar(st.lastMs)
		nonzero := 0
		for i := range st.bins {
			if st.bins[i].n > 0 {
				nonzero++
			}
		}
		w.int(nonzero)
		prev := -1
		for i := range st.bins {
			b := &st.bins[i]
			if b.n == 0 {
				continue
			}
			w.int(i - prev - 1)
			w.int(int(b.n))
			w.f64(b.level)
			w.f64(b.spread)
			prev = i
		}
	}
	return w.b, nil
}

// UnmarshalBinary implements Persistent; it replaces s's configuration and state.
func (s *Seasonal) UnmarshalBinary(data []byte) error {
	r, err := newSnapReader(data, snapSeasonal, "seasonal")
	if err != nil {
		return err
	}
	cfg := SeasonalConfig{
		BinsPerDay:     r.intIn(1, 1440, "bins_per_day"),
		Weekly:         r.boolean("weekly"),
		Alpha:          r.f64("alpha"),
		MinSamples:     r.intIn(1, 1<<20, "min_samples"),
		StepSeconds:    r.f64("step_seconds"),
		UTCOffsetHours: r.f64("utc_offset_hours"),
	}
	if r.err != nil {
		return r.err
	}
	out, err := NewSeasonal(cfg)
	if err != nil {
		return fmt.Errorf("seasonal snapshot: %v: %w", err, ErrSnapshotCorrupt)
	}
	n := r.count(4, "series")
	for range n {
		name := r.str("series name")
		width := r.count(0, "width")
		lastMs := r.ivar("last timestamp")
		if _, dup := out.series[name]; dup && r.err == nil {
			r.fail("series %q twice", name)
		}
		if !r.alloc(24*width*out.nb, "series bins") {
			break
		}
		st := &seasonalState{bins: make([]seasonalBin, width*out.nb), lastMs: lastMs}
		nonzero := r.count(18, "bins with records")
		i := -1
		for range nonzero {
			i += 1 + int(min(r.uvar("bin gap"), uint64(len(st.bins))))
			cnt := r.uvar("bin count")
			level, spread := r.f64("bin level"), r.f64("bin spread")
			if r.err != nil {
				break
			}
			if i >= len(st.bins) || cnt == 0 || cnt > math.MaxUint32 || !finite(level) || !(spread >= 0 && spread <= math.MaxFloat64) {
				r.fail("bin %d of %d: %d records, level %v, spread %v", i, len(st.bins), cnt, level, spread)
				break
			}
			st.bins[i] = seasonalBin{level: level, spread: spread, n: uint32(cnt)}
		}
		out.series[name] = st
	}
	if err := r.done(); err != nil {
		return err
	}
	*s = *out
	return nil
}
