package report

import (
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// How figures are printed, in HTML and PDF alike; the tests print the
// PromQL API's answers with the same functions and look for them.

// Count prints a number of requests, rounded, with thousands separators:
// "12,345".
func Count(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return group(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
}

// Percent prints a ratio as a percentage with one decimal: "98.7%".
func Percent(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return strconv.FormatFloat(v*100, 'f', 1, 64) + "%"
}

// Seconds prints a latency in milliseconds below 10 s: "153 ms", else in
// seconds: "12.4 s".
func Seconds(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v < 10:
		return strconv.FormatFloat(v*1000, 'f', 0, 64) + " ms"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " s"
}

// Amount prints an amount of money with its currency: "1,234.56 USD";
// amounts below 1 get four decimals ("0.0123 USD").
func Amount(v float64, currency string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	prec := 2
	if math.Abs(v) < 1 && v != 0 {
		prec = 4
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	whole, frac, _ := strings.Cut(s, ".")
	return group(whole) + "." + frac + " " + currency
}

// Amounts prints an amount per currency, one after the other in currency
// order: "12.00 EUR, 3.50 USD"; "–" for none.
func Amounts(m Money) string {
	if len(m) == 0 {
		return "–"
	}
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, Amount(m[c], c))
	}
	return strings.Join(parts, ", ")
}

// Bytes prints a size in decimal units: "1.2 GB".
func Bytes(v float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	i := 0
	for math.Abs(v) >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(v, 'f', 0, 64) + " B"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " " + units[i]
}

// Change prints the relative change from prev to cur: "+12.3%", "−4.0%",
// "new" when prev is 0, "–" when both are.
func Change(cur, prev float64) string {
	switch {
	case math.IsNaN(cur) || math.IsNaN(prev) || (cur == 0 && prev == 0):
		return "–"
	case prev == 0:
		return "new"
	}
	return signed((cur-prev)/prev*100, 1) + "%"
}

// Points prints the change between two ratios in percentage points:
// "+1.2 pt".
func Points(cur, prev float64) string {
	if math.IsNaN(cur) || math.IsNaN(prev) {
		return "–"
	}
	return signed((cur-prev)*100, 1) + " pt"
}

func signed(v float64, prec int) string {
	s := strconv.FormatFloat(math.Abs(v), 'f', prec, 64)
	if strconv.FormatFloat(v, 'f', prec, 64) == "-"+s {
		return "-" + s
	}
	return "+" + s
}

// Date prints a day as "Mon 02 Jan", an hour as "02 Jan 15:04".
func Date(t time.Time, step time.Duration) string {
	if step < 24*time.Hour {
		return t.UTC().Format("02 Jan 15:04")
	}
	return t.UTC().Format("Mon 02 Jan")
}

// AppName prints an application, naming requests without one.
func AppName(name string) string {
	if name == "" {
		return "(no application)"
	}
	return name
}

func group(digits string) string {
	neg := strings.HasPrefix(digits, "-")
	digits = strings.TrimPrefix(digits, "-")
	var b strings.Builder
	for i, c := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg && digits != "0" {
		return "-" + b.String()
	}
	return b.String()
}
