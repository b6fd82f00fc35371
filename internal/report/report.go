package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/proxylens/proxylens/internal/export"
	"github.com/proxylens/proxylens/promql"
)

// Request is a report as POST /api/v1/reports asks for it.
type Request struct {
	Range        json.RawMessage `json:"range"`
	Sources      []string        `json:"sources"`
	Applications []string        `json:"applications"`
	Format       string          `json:"format"`
}

// Spec is what a report covers: the period [Start, End] and the sources
// and applications it is narrowed to (none: all).
type Spec struct {
	Start, End   time.Time
	Sources      []string
	Applications []string
}

// Formats a report is written in.
const (
	HTML = "html"
	PDF  = "pdf"
)

// QueryFunc runs a PromQL query on behalf of user through the query API's
// entry point (export.Options.Query).
type QueryFunc func(ctx context.Context, user string, req promql.Request) (*promql.Result, error)

// ErrNoData refuses a report whose period holds no requests and no spend.
var ErrNoData = errors.New("no requests and no spend in the period")

// Task validates req and returns the export job that builds and writes
// its report, with its queries run as user at now.
func Task(req Request, query QueryFunc, user string, now time.Time) (export.Task, error) {
	start, end, err := export.ParseRange(req.Range, now)
	if err != nil {
		return export.Task{}, err
	}
	if req.Format != HTML && req.Format != PDF {
		return export.Task{}, fmt.Errorf("format: %q is not html or pdf", req.Format)
	}
	for i, s := range req.Sources {
		if s == "" {
			return export.Task{}, fmt.Errorf("sources[%d]: empty", i)
		}
	}
	for i, a := range req.Applications {
		if a == "" {
			return export.Task{}, fmt.Errorf("applications[%d]: empty", i)
		}
	}
	spec := Spec{Start: start, End: end, Sources: req.Sources, Applications: req.Applications}
	format := req.Format
	return export.Task{
		Kind: "report", Format: format, Start: start, End: end,
		Filters: export.Filters{Source: req.Sources, Application: req.Applications},
		Write: func(ctx context.Context, w io.Writer, progress func(float64)) (int64, error) {
			r, err := Build(ctx, query, user, spec, func(p float64) { progress(0.9 * p) })
			if err != nil {
				return 0, err
			}
			r.Generated = now
			if format == PDF {
				return r.rows(), WritePDF(w, r)
			}
			return r.rows(), WriteHTML(w, r)
		},
	}, nil
}

// rows counts the table lines of a report.
func (r *Report) rows() int64 {
	return int64(len(r.Days) + len(r.Sources) + len(r.Applications) + len(r.Tiers) + len(r.Domains) + len(r.Degraded))
}

// Report is what a report shows, every figure a PromQL answer.
type Report struct {
	Spec
	Generated time.Time
	// PrevStart begins the previous period, [PrevStart, Start], as long
	// as the report's.
	PrevStart time.Time
	// Step is the trend's period: a day, or an hour for reports shorter
	// than three days.
	Step              time.Duration
	Current, Previous Totals
	Days              []Day
	Sources           []Source
	Applications      []Application
	Tiers             []Tier
	Domains           []Domain
	Degraded          []Degraded
	// Currencies are every currency spent in either period, sorted.
	Currencies []string
}

// Money is an amount per currency: amounts in different currencies are
// never added.
type Money map[string]float64

// Totals are a period's figures.
type Totals struct {
	Requests, Successes       float64
	MeanLatency, P95Latency   float64 // seconds; NaN without requests
	BytesSent, BytesReceived  float64
	Spend, CostPerSuccess     Money
	UsageSpend, Subscriptions Money
}

// SuccessRate is successes over requests, NaN without requests.
func (t Totals) SuccessRate() float64 { return ratio(t.Successes, t.Requests) }

// Day is one step of the trend, the period (End − Step, End].
type Day struct {
	End                 time.Time
	Requests, Successes float64
	Spend               Money
}

// Source is a source's figures in the period, and its success in the
// previous one.
type Source struct {
	Name, Tier                  string
	Requests, Successes         float64
	PrevRequests, PrevSuccesses float64
	MeanLatency, P95Latency     float64
	Spend, CostPerSuccess       Money
}

// Application is an application's requests and the spend allocated to it:
// usage, and its share of subscriptions.
type Application struct {
	Name                string // "" for requests without an application
	Requests, Successes float64
	Usage, Subscription Money
	Spend, PrevSpend    Money
}

// Tier is premium or free sources' figures; spend goes to the tiers in
// proportion to each source's requests.
type Tier struct {
	Name                  string
	Requests, Successes   float64
	P95Latency            float64
	Spend, CostPerSuccess Money
}

// Domain is one of the most requested domains.
type Domain struct {
	Name                string
	Requests, Successes float64
}

// Degraded is a source whose success rate in the period fell clearly
// below its previous period's.
type Degraded struct {
	Source         string
	Rate, PrevRate float64
	Drop           float64 // PrevRate − Rate, as the query answers it
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}
