// Package traffic models realistic proxy traffic: about twenty proxy sources
// (free ones slow and failing about 30% of the time, premium ones fast and
// failing about 3%), ten applications, a few hundred target domains with a
// skewed popularity, and the failures proxies see (407 proxy auth, 429 rate
// limits, 5xx, timeouts, connection errors). proxylens demo, loadgen, tests
// and benchmarks all draw from it.
//
// A Generator is not safe for concurrent use; give each goroutine its own.
package traffic

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Source is one proxy source.
type Source struct {
	Name    string
	Tier    string // "free" or "premium"
	Proxies []string
	// FailRate is the probability of a failed request.
	FailRate float64
	// Median latency of successful requests.
	Median time.Duration
}

// Request is one proxied request as a client's instrumentation sees it.
type Request struct {
	Source      *Source
	Proxy       string // host:port
	Application string
	Domain      string
	Path        string
	Method      string
	StatusCode  int    // 0: no response (timeout, connection error)
	ErrorType   string // empty on success
	Start, End  time.Time
	BytesSent   int64
	BytesRecv   int64
	TraceID     [16]byte
	SpanID      [8]byte
}

// Success reports whether the request succeeded.
func (r *Request) Success() bool { return r.ErrorType == "" }

// ProxyURL returns the proxy URL with credentials, as clients configure it;
// proxylens must never store them.
func (r *Request) ProxyURL() string {
	return "http://user-" + r.Application + ":s3cret@" + r.Proxy
}

// URL returns the full target URL, with a query token proxylens must drop.
func (r *Request) URL() string {
	return "https://" + r.Domain + r.Path + "?token=s3cret"
}

// Model is the population a generator draws from.
type Model struct {
	Sources      []*Source
	Applications []string
	Domains      []string
	zipf         []float64 // cumulative domain popularity
}

var premiumNames = []string{"brightdata", "oxylabs", "smartproxy", "netnut", "iproyal", "soax", "rayobyte", "webshare"}
var freeNames = []string{"freeproxy-list", "spys-one", "proxyscrape", "geonode", "hidemy-name", "proxynova",
	"free-proxy-cz", "openproxy-space", "sslproxies", "us-proxy", "proxy-list-download", "gatherproxy"}

// NewModel returns the standard population: 8 premium and 12 free sources,
// 10 applications and domains domains.
func NewModel(domains int) *Model {
	rnd := rand.New(rand.NewPCG(42, 42))
	m := &Model{}
	for i, n := range premiumNames {
		s := &Source{Name: n, Tier: "premium", FailRate: 0.02 + 0.02*rnd.Float64(), Median: time.Duration(150+rnd.IntN(250)) * time.Millisecond}
		for p := range 8 {
			s.Proxies = append(s.Proxies, fmt.Sprintf("10.%d.%d.%d:%d", 10+i, p, 1+rnd.IntN(250), 8000+rnd.IntN(1000)))
		}
		m.Sources = append(m.Sources, s)
	}
	for i, n := range freeNames {
		s := &Source{Name: n, Tier: "free", FailRate: 0.2 + 0.2*rnd.Float64(), Median: time.Duration(600+rnd.IntN(1400)) * time.Millisecond}
		for p := range 25 {
			s.Proxies = append(s.Proxies, fmt.Sprintf("%d.%d.%d.%d:%d", 45+i, rnd.IntN(255), p, 1+rnd.IntN(250), []int{80, 3128, 8080, 1080}[rnd.IntN(4)]))
		}
		m.Sources = append(m.Sources, s)
	}
	m.Applications = []string{"price-monitor", "seo-crawler", "ad-verifier", "review-scraper", "travel-fares",
		"brand-protect", "market-research", "lead-gen", "news-aggregator", "stock-sentiment"}
	tlds := []string{"com", "net", "org", "io", "de", "co.uk", "fr", "shop"}
	words := []string{"shop", "news", "travel", "market", "price", "deal", "review", "store", "bazaar", "media"}
	for i := range domains {
		m.Domains = append(m.Domains, words[i%len(words)]+strconv.Itoa(i)+"."+tlds[i%len(tlds)])
	}
	// Zipf-like popularity with exponent 1.1.
	var sum float64
	for i := range m.Domains {
		sum += 1 / math.Pow(float64(i+1), 1.1)
		m.zipf = append(m.zipf, sum)
	}
	for i := range m.zipf {
		m.zipf[i] /= sum
	}
	return m
}

// Generator draws requests from a model.
type Generator struct {
	m   *Model
	rnd *rand.Rand
}

// NewGenerator returns a generator with its own random stream.
func NewGenerator(m *Model, seed uint64) *Generator {
	return &Generator{m: m, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Rand returns the generator's random stream.
func (g *Generator) Rand() *rand.Rand { return g.rnd }

// Next draws one request that ends at end.
func (g *Generator) Next(end time.Time) Request {
	rnd := g.rnd
	src := g.m.Sources[rnd.IntN(len(g.m.Sources))]
	d := g.m.Domains[g.domain()]
	r := Request{
		Source:      src,
		Proxy:       src.Proxies[rnd.IntN(len(src.Proxies))],
		Application: g.m.Applications[rnd.IntN(len(g.m.Applications))],
		Domain:      d,
		Path:        "/item/" + strconv.Itoa(rnd.IntN(100000)),
		Method:      "GET",
		End:         end,
	}
	if rnd.IntN(10) == 0 {
		r.Method = "POST"
		r.BytesSent = int64(200 + rnd.IntN(4000))
	}
	// Log-normal latency around the source's median.
	lat := time.Duration(float64(src.Median) * math.Exp(0.6*rnd.NormFloat64()))
	r.StatusCode = 200
	r.BytesRecv = int64(2000 + rnd.IntN(200000))
	if rnd.Float64() < src.FailRate {
		r.BytesRecv = 0
		switch x := rnd.Float64(); {
		case x < 0.25:
			r.StatusCode, r.ErrorType = 407, "407"
			lat /= 4
		case x < 0.45:
			r.StatusCode, r.ErrorType = 429, "429"
			lat /= 2
		case x < 0.6:
			r.StatusCode, r.ErrorType = 502+rnd.IntN(3), ""
			r.ErrorType = strconv.Itoa(r.StatusCode)
		case x < 0.8:
			r.StatusCode, r.ErrorType = 0, "timeout"
			lat = 30 * time.Second
		default:
			r.StatusCode, r.ErrorType = 0, "connection_refused"
			lat /= 10
		}
	} else if rnd.IntN(50) == 0 {
		r.StatusCode, r.ErrorType = 404, "404"
	}
	r.Start = end.Add(-lat)
	putRandom(rnd, r.TraceID[:])
	putRandom(rnd, r.SpanID[:])
	return r
}

func (g *Generator) domain() int {
	x := g.rnd.Float64()
	lo, hi := 0, len(g.m.zipf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if g.m.zipf[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

func putRandom(rnd *rand.Rand, b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rnd.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[len(b)-1] |= 1 // never all zero
}
