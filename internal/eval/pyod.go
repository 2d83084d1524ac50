package eval

import "math"

// Reference is a published result of PyOD's benchmark protocol, under gonomaly's
// detector name.
type Reference struct {
	Dataset, Detector string
	ROCAUC            float64
	// PrecisionAtN is NaN where PyOD did not publish one we could check.
	PrecisionAtN float64
	// Splits is how many random splits the published mean is over: 10 for PyOD's
	// benchmark table, 1 for the numbers taken from its 2024 notebook run.
	Splits int
}

// PyODReference holds the published ROC-AUC (and some precision@n) of PyOD's detectors
// on the four ODDS datasets its benchmark table shares with ours. IForest to PCA are
// PyOD's docs/tables/roc.csv (and prc.csv), 10-split means; ECOD, COPOD and LODA come from
// PyOD's 2024 single-split notebook run. Source: ../shared/data/README.md.
var PyODReference = func() []Reference {
	nan := math.NaN()
	detectors := []string{"iforest", "lof", "knn", "hbos", "ocsvm", "pca", "ecod", "copod", "loda"}
	splits := []int{10, 10, 10, 10, 10, 10, 1, 1, 1}
	rocAUC := map[string][]float64{
		"cardio":    {.921, .574, .724, .835, .935, .950, .936, .921, .857},
		"satellite": {.702, .557, .684, .758, .662, .599, .581, .633, .602},
		"shuttle":   {.997, .526, .654, .986, .992, .990, .993, .994, .835},
		"pendigits": {.944, .470, .749, .924, .930, .935, .927, .905, .947},
	}
	precision := map[[2]string]float64{
		{"cardio", "iforest"}: .504, {"cardio", "hbos"}: .448, {"cardio", "ecod"}: .546,
		{"shuttle", "iforest"}: .955, {"shuttle", "hbos"}: .955, {"shuttle", "copod"}: .950,
		{"pendigits", "iforest"}: .342, {"pendigits", "hbos"}: .298,
	}
	var out []Reference
	for _, ds := range []string{"cardio", "satellite", "shuttle", "pendigits"} {
		for i, det := range detectors {
			p, ok := precision[[2]string{ds, det}]
			if !ok {
				p = nan
			}
			out = append(out, Reference{Dataset: ds, Detector: det, ROCAUC: rocAUC[ds][i], PrecisionAtN: p, Splits: splits[i]})
		}
	}
	return out
}()

// PublishedPyOD finds the published result for a dataset and detector.
func PublishedPyOD(dataset, detector string) (Reference, bool) {
	for _, r := range PyODReference {
		if r.Dataset == dataset && r.Detector == detector {
			return r, true
		}
	}
	return Reference{}, false
}
