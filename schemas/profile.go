package schemas

import (
	"math"
	"slices"
	"sort"
)

// Round6 rounds to 6 decimals, ties to even, as Python's round() does for
// the profiles and metrics make models writes.
func Round6(x float64) float64 { return math.RoundToEven(x*1e6) / 1e6 }

// NumericProfile profiles values with frozen edges at the bins+1 evenly
// spaced quantiles (linear interpolation, numpy's default), rounded to 6
// decimals and deduplicated. Bin i counts edges[i] <= x < edges[i+1];
// values below the first edge are underflow, at or above the last
// overflow. NaN values count as missing. It is the profile make models
// writes, so that a package built by seer models init drifts the same way.
func NumericProfile(values []float64, bins int) ColumnProfile {
	var xs []float64
	missing := int64(0)
	for _, v := range values {
		if math.IsNaN(v) {
			missing++
			continue
		}
		xs = append(xs, v)
	}
	slices.Sort(xs)
	p := ColumnProfile{Kind: ProfileNumeric, Missing: missing}
	if len(xs) == 0 {
		return p
	}
	for i := 0; i <= bins; i++ {
		pos := float64(i) / float64(bins) * float64(len(xs)-1)
		lo := int(math.Floor(pos))
		hi := min(lo+1, len(xs)-1)
		q := Round6(xs[lo] + (pos-float64(lo))*(xs[hi]-xs[lo]))
		if len(p.Edges) == 0 || q > p.Edges[len(p.Edges)-1] {
			p.Edges = append(p.Edges, q)
		}
	}
	p.Counts = make([]int64, max(len(p.Edges)-1, 0))
	sum, sq := 0.0, 0.0
	for _, x := range xs {
		sum += x
		i := sort.SearchFloat64s(p.Edges, math.Nextafter(x, math.Inf(1))) // edges <= x
		switch {
		case i == 0:
			p.Underflow++
		case i >= len(p.Edges):
			p.Overflow++
		default:
			p.Counts[i-1]++
		}
	}
	mean := sum / float64(len(xs))
	for _, x := range xs {
		sq += (x - mean) * (x - mean)
	}
	p.Mean, p.Std = Round6(mean), Round6(math.Sqrt(sq/float64(len(xs))))
	return p
}

// CategoricalProfile counts each of categories in values; values outside
// them count as other, "" as missing.
func CategoricalProfile(values []string, categories []string) ColumnProfile {
	p := ColumnProfile{Kind: ProfileCategorical, Frequencies: map[string]int64{}}
	for _, c := range categories {
		p.Frequencies[c] = 0
	}
	for _, v := range values {
		switch _, ok := p.Frequencies[v]; {
		case v == "":
			p.Missing++
		case ok:
			p.Frequencies[v]++
		default:
			p.Other++
		}
	}
	return p
}
