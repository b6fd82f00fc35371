package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/proxylens/proxylens/internal/traffic"
)

type demoConfig struct {
	endpoint string
	protocol string
	rate     float64
	duration time.Duration
	backfill time.Duration
	spans    int
	domains  int
	seed     uint64
}

// demo sends realistic proxy traffic through the OpenTelemetry Go SDK's OTLP
// exporter, as an instrumented proxy client would.
func demo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("proxylens demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c demoConfig
	var duration, backfill string
	fs.StringVar(&c.endpoint, "endpoint", "127.0.0.1:4317", "OTLP endpoint: host:port for gRPC, or host:port of OTLP/HTTP with --protocol http")
	fs.StringVar(&c.protocol, "protocol", "grpc", "grpc or http")
	fs.Float64Var(&c.rate, "rate", 200, "spans per second to send (0: as fast as the exporter takes them)")
	fs.StringVar(&duration, "duration", "1m", "how long to send live traffic")
	fs.StringVar(&backfill, "backfill", "", "instead of live traffic, send --spans spans with end times spread over this much of the past (e.g. 30d)")
	fs.IntVar(&c.spans, "spans", 100000, "spans to send with --backfill")
	fs.IntVar(&c.domains, "domains", 300, "number of target domains")
	fs.Uint64Var(&c.seed, "seed", uint64(time.Now().UnixNano()), "random seed")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: proxylens demo [flags]\n\nSend realistic proxy traffic (about 20 sources, 10 applications, a few hundred\ndomains) to a proxylens OTLP endpoint through the OpenTelemetry Go SDK.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "proxylens demo: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	var errs []string
	d, err := model.ParseDuration(duration)
	if err != nil || d <= 0 {
		errs = append(errs, fmt.Sprintf("--duration: %q is not a positive duration", duration))
	}
	c.duration = time.Duration(d)
	if backfill != "" {
		b, err := model.ParseDuration(backfill)
		if err != nil || b <= 0 {
			errs = append(errs, fmt.Sprintf("--backfill: %q is not a positive duration such as 30d", backfill))
		}
		c.backfill = time.Duration(b)
	}
	if c.protocol != "grpc" && c.protocol != "http" {
		errs = append(errs, fmt.Sprintf("--protocol: must be grpc or http, got %q", c.protocol))
	}
	if c.rate < 0 || math.IsNaN(c.rate) {
		errs = append(errs, fmt.Sprintf("--rate: must be >= 0, got %v", c.rate))
	}
	if c.spans < 1 {
		errs = append(errs, fmt.Sprintf("--spans: must be at least 1, got %d", c.spans))
	}
	if c.domains < 1 {
		errs = append(errs, fmt.Sprintf("--domains: must be at least 1, got %d", c.domains))
	}
	if len(errs) > 0 {
		fmt.Fprintln(stderr, "proxylens demo: "+strings.Join(errs, "\n  "))
		return errUsage
	}
	return runDemo(ctx, c, stdout)
}

func runDemo(ctx context.Context, c demoConfig, stdout io.Writer) error {
	var exp sdktrace.SpanExporter
	var err error
	if c.protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(c.endpoint), otlptracegrpc.WithInsecure())
	} else {
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(c.endpoint), otlptracehttp.WithInsecure())
	}
	if err != nil {
		return fmt.Errorf("create OTLP exporter: %w", err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "proxy-client"), attribute.String("service.instance.id", fmt.Sprintf("demo-%d", c.seed%10000)))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp, sdktrace.WithBlocking(), sdktrace.WithMaxQueueSize(65536), sdktrace.WithBatchTimeout(time.Second)),
	)
	tracer := tp.Tracer("github.com/proxylens/proxylens/demo")
	gen := traffic.NewGenerator(traffic.NewModel(c.domains), c.seed)

	start := time.Now()
	total := int(c.rate * c.duration.Seconds())
	mode := fmt.Sprintf("live traffic at %g spans/s for %s", c.rate, c.duration)
	if c.backfill > 0 {
		total = c.spans
		mode = fmt.Sprintf("%d spans spread over the past %s", c.spans, model.Duration(c.backfill))
	} else if c.rate == 0 {
		total = math.MaxInt
		mode = "live traffic as fast as possible for " + c.duration.String()
	}
	fmt.Fprintf(stdout, "sending %s to %s (%s)\n", mode, c.endpoint, c.protocol)
	var failed int
	sent := 0
	lastReport := start
	for ; sent < total; sent++ {
		if ctx.Err() != nil {
			break
		}
		now := time.Now()
		if c.backfill == 0 && now.Sub(start) >= c.duration {
			break
		}
		if c.rate > 0 {
			due := start.Add(time.Duration(float64(sent) / c.rate * float64(time.Second)))
			if wait := due.Sub(now); wait > 2*time.Millisecond {
				select {
				case <-time.After(wait):
				case <-ctx.Done():
				}
				now = time.Now()
			}
		}
		end := now
		if c.backfill > 0 {
			end = backfillTime(gen, now, c.backfill)
		}
		r := gen.Next(end)
		if !r.Success() {
			failed++
		}
		emit(ctx, tracer, &r)
		if now.Sub(lastReport) >= 5*time.Second {
			fmt.Fprintf(stdout, "  %d spans sent\n", sent+1)
			lastReport = now
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tp.Shutdown(sctx); err != nil {
		return fmt.Errorf("flush spans: %w", err)
	}
	fmt.Fprintf(stdout, "sent %d spans (%d failed requests) in %s\n", sent, failed, time.Since(start).Round(time.Millisecond))
	return nil
}

// backfillTime draws an end time in the past window with a daily rhythm:
// busier in the working day than at night.
func backfillTime(gen *traffic.Generator, now time.Time, window time.Duration) time.Time {
	rnd := gen.Rand()
	for {
		t := now.Add(-time.Duration(rnd.Int64N(int64(window))))
		hour := float64(t.Hour()) + float64(t.Minute())/60
		density := 1 + 0.6*math.Sin((hour-9)/24*2*math.Pi)
		if rnd.Float64()*1.6 < density {
			return t
		}
	}
}

// emit records one proxied request as a client span, with the attributes of
// the current HTTP semantic conventions (see docs/attributes.md).
func emit(ctx context.Context, tracer trace.Tracer, r *traffic.Request) {
	attrs := []attribute.KeyValue{
		attribute.String("proxy.source", r.Source.Name),
		attribute.String("proxy.tier", r.Source.Tier),
		attribute.String("proxy.url", r.ProxyURL()),
		attribute.String("app.id", r.Application),
		attribute.String("http.request.method", r.Method),
		attribute.String("url.full", r.URL()),
		attribute.String("server.address", r.Domain),
		attribute.Int("server.port", 443),
		attribute.Int64("http.response.body.size", r.BytesRecv),
	}
	if r.StatusCode != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", r.StatusCode))
	}
	if r.BytesSent > 0 {
		attrs = append(attrs, attribute.Int64("http.request.body.size", r.BytesSent))
	}
	_, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(r.Start), trace.WithAttributes(attrs...))
	if r.ErrorType != "" {
		span.SetAttributes(attribute.String("error.type", r.ErrorType))
		span.SetStatus(codes.Error, r.ErrorType)
	}
	span.End(trace.WithTimestamp(r.End))
}
