package detectors

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestECDFExact: after 1..20 (window 20), 10.5 has 10 values below → 0.5; 10 has 9 below
// and one tie → 0.475; anything above 20 is 1 and below 1 is 0.
func TestECDFExact(t *testing.T) {
	for _, tc := range []struct{ raw, want float64 }{
		{10.5, 0.5}, {10, 0.475}, {21, 1}, {0, 0}, {1, 0.025},
	} {
		c := NewECDFCalibrator(20)
		for i := 1; i <= 20; i++ {
			c.Calibrate(float64(i))
		}
		if got := c.Calibrate(tc.raw); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("Calibrate(%v) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

// TestECDFSlidingMatchesBruteForce compares with counting over the last window scores.
func TestECDFSlidingMatchesBruteForce(t *testing.T) {
	const w = 50
	c := NewECDFCalibrator(w)
	rng := rand.New(rand.NewPCG(1, 2))
	var hist []float64
	for i := range 2000 {
		raw := float64(rng.IntN(30)) // ties on purpose
		last := hist[max(0, len(hist)-w):]
		want := 0.0
		if len(last) >= CalibrationWarmup {
			below, eq := 0, 0
			for _, v := range last {
				if v < raw {
					below++
				} else if v == raw {
					eq++
				}
			}
			want = (float64(below) + 0.5*float64(eq)) / float64(len(last))
		}
		if got := c.Calibrate(raw); math.Abs(got-want) > 1e-15 {
			t.Fatalf("step %d: Calibrate(%v) = %v, want %v", i, raw, got, want)
		}
		hist = append(hist, raw)
	}
}

func TestGaussianMatchesDirect(t *testing.T) {
	const w = 40
	c := NewGaussianCalibrator(w)
	rng := rand.New(rand.NewPCG(3, 4))
	var hist []float64
	for i := range 5000 {
		raw := 100 + 10*rng.NormFloat64()
		last := hist[max(0, len(hist)-w):]
		want := 0.0
		if len(last) >= CalibrationWarmup {
			mean, v := 0.0, 0.0
			for _, x := range last {
				mean += x
			}
			mean /= float64(len(last))
			for _, x := range last {
				v += (x - mean) * (x - mean)
			}
			sd := math.Sqrt(v / float64(len(last)))
			want = 0.5 * math.Erfc(-(raw-mean)/(sd*math.Sqrt2))
		}
		if got := c.Calibrate(raw); math.Abs(got-want) > 1e-9 {
			t.Fatalf("step %d: Calibrate(%v) = %v, want %v", i, raw, got, want)
		}
		hist = append(hist, raw)
	}
}

// TestCalibratorsRangeAndMonotone: for a fixed history, outputs lie in [0,1] and do not
// decrease as raw grows, also for constant histories and extreme or non-finite inputs.
func TestCalibratorsRangeAndMonotone(t *testing.T) {
	histories := map[string][]float64{
		"normal":   normals(300, 1),
		"constant": make([]float64, 300),
		"heavy":    func() []float64 { v := normals(300, 2); v[7] = 1e12; return v }(),
	}
	probes := []float64{math.Inf(-1), -1e300, -5, -1, -1e-12, 0, 1e-12, 0.5, 1, 3, 1e12, 1e300, math.Inf(1)}
	for _, method := range CalibrationMethods() {
		for name, h := range histories {
			prev := -1.0
			for _, p := range probes {
				c, err := NewCalibrator(method, 200)
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range h {
					if got := c.Calibrate(v); !(got >= 0 && got <= 1) {
						t.Fatalf("%s/%s: output %v out of [0,1]", method, name, got)
					}
				}
				got := c.Calibrate(p)
				if !(got >= 0 && got <= 1) || got < prev {
					t.Fatalf("%s/%s: Calibrate(%v) = %v after %v: out of range or not monotone", method, name, p, got, prev)
				}
				prev = got
			}
			if c, _ := NewCalibrator(method, 200); !math.IsNaN(c.Calibrate(math.NaN())) {
				t.Fatalf("%s: NaN (a detector warming up) must stay NaN", method)
			}
		}
	}
}

func TestCalibratorWarmup(t *testing.T) {
	for _, method := range CalibrationMethods() {
		c, _ := NewCalibrator(method, 100)
		for i := range CalibrationWarmup {
			if got := c.Calibrate(float64(i * 1000)); got != 0 {
				t.Fatalf("%s: %v before %d scores, want 0", method, got, CalibrationWarmup)
			}
		}
		want := 1.0
		if method == CalibrationPOT {
			// No tail is drawn from so few scores, and ranks cannot claim more than 1 in n+1.
			want = float64(CalibrationWarmup) / float64(CalibrationWarmup+1)
		}
		if got := c.Calibrate(1e9); got != want {
			t.Fatalf("%s: new maximum after warm-up = %v, want %v", method, got, want)
		}
	}
}

func TestNewCalibratorErrors(t *testing.T) {
	if _, err := NewCalibrator("isotonic", 100); err == nil || !strings.Contains(err.Error(), "isotonic") ||
		!strings.Contains(err.Error(), "ecdf") || !strings.Contains(err.Error(), "gaussian") {
		t.Fatalf("unknown method: error %v should name it and the known ones", err)
	}
	if _, err := NewCalibrator("ecdf", 3); err == nil || !strings.Contains(err.Error(), "[16,") {
		t.Fatalf("tiny window: error %v should give the range", err)
	}
}

func TestCalibratorsNoAllocs(t *testing.T) {
	for _, method := range CalibrationMethods() {
		c, _ := NewCalibrator(method, 2000)
		xs := normals(4096, 1)
		for _, x := range xs {
			c.Calibrate(x)
		}
		i := 0
		if a := testing.AllocsPerRun(5000, func() { c.Calibrate(xs[i&4095]); i++ }); a != 0 {
			t.Fatalf("%s: Calibrate allocates %v times per call, want 0", method, a)
		}
	}
}

func BenchmarkECDFCalibrator(b *testing.B) {
	c := NewECDFCalibrator(2000)
	xs := normals(4096, 1)
	for _, x := range xs {
		c.Calibrate(x)
	}
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		c.Calibrate(xs[i&4095])
	}
}

func BenchmarkGaussianCalibrator(b *testing.B) {
	c := NewGaussianCalibrator(2000)
	xs := normals(4096, 1)
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		c.Calibrate(xs[i&4095])
	}
}
