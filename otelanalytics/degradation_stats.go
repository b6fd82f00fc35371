package otelanalytics

import "math"

// tally is what a source did in one interval of event time, or summed over
// several: its requests, those that succeeded, and the latency histogram of
// the successful ones (non-cumulative counts per bucket of DurationBuckets,
// +Inf last).
type tally struct {
	req, ok float64
	lat     [durationBuckets]float64
}

func (t *tally) add(o *tally) {
	t.req += o.req
	t.ok += o.ok
	for i := range t.lat {
		t.lat[i] += o.lat[i]
	}
}

func (t *tally) sub(o *tally) {
	t.req -= o.req
	t.ok -= o.ok
	for i := range t.lat {
		t.lat[i] -= o.lat[i]
	}
}

func (t *tally) empty() bool { return t.req == 0 }

// successes is how many requests of the latency histogram there are.
func (t *tally) successes() float64 {
	var n float64
	for _, c := range t.lat {
		n += c
	}
	return n
}

// quantile estimates the q-quantile of the latency histogram as
// histogram_quantile does: linear within a bucket, the lower bound of the
// first bucket 0. It returns NaN without requests, and +Inf when the
// quantile lies in the +Inf bucket.
func (t *tally) quantile(q float64) float64 {
	n := t.successes()
	if n <= 0 {
		return math.NaN()
	}
	rank := q * n
	var cum, lo float64
	for i, c := range t.lat {
		if i == len(DurationBuckets) {
			return math.Inf(1)
		}
		hi := DurationBuckets[i]
		if cum+c >= rank && c > 0 {
			return lo + (hi-lo)*(rank-cum)/c
		}
		cum += c
		lo = hi
	}
	return math.Inf(1)
}

// above estimates how many requests of the latency histogram took longer
// than x seconds, linear within x's bucket.
func (t *tally) above(x float64) float64 {
	var n, lo float64
	for i, c := range t.lat {
		if i == len(DurationBuckets) {
			n += c // +Inf: all above any finite x within the bounds
			break
		}
		hi := DurationBuckets[i]
		switch {
		case x <= lo:
			n += c
		case x < hi:
			n += c * (hi - x) / (hi - lo)
		}
		lo = hi
	}
	return n
}

// zScore is the one-sided score of seeing bad events out of n when each is
// bad with probability b0, against the hypothesis that the rate rose:
// (x/n − b0) / sqrt(φ·b0·(1−b0)/n), φ ≥ 1 the dispersion the source showed
// when healthy. A baseline rate of exactly 0 or 1 counts as 0.5 events in
// the baseline's n0, so that one failure after a perfect week is not
// infinitely significant.
func zScore(x, n, b0, n0, phi float64) float64 {
	if n <= 0 {
		return 0
	}
	floor := 0.5 / max(n0, 1)
	b := min(max(b0, floor), 1-floor)
	return (x/n - b0) / math.Sqrt(phi*b*(1-b)/n)
}

// zFor returns the one-sided normal quantile of significance level alpha:
// the score a test must reach to reject at that level.
func zFor(alpha float64) float64 { return math.Sqrt2 * math.Erfinv(1-2*alpha) }

// changePoint finds where a run of Bernoulli counts most likely stepped up
// from the rate b0: bad[i] bad events out of n[i] in slot i, oldest first.
// It returns the first slot of the change that maximizes the log-likelihood
// ratio of "rate b0 before, the run's own rate from there on" against "b0
// throughout" (the maximum-likelihood change point of a single step with an
// unknown new rate), or -1 if no suffix is worse than b0.
func changePoint(bad, n []float64, b0 float64) int {
	floor := 1e-9
	b0 = min(max(b0, floor), 1-floor)
	best, at := 0.0, -1
	var x, m float64
	for i := len(n) - 1; i >= 0; i-- {
		x += bad[i]
		m += n[i]
		if m <= 0 || n[i] <= 0 {
			continue
		}
		b1 := x / m
		if b1 <= b0 {
			continue
		}
		llr := x * math.Log(b1/b0)
		if b1 < 1 {
			llr += (m - x) * math.Log((1-b1)/(1-b0))
		}
		if llr > best {
			best, at = llr, i
		}
	}
	return at
}
